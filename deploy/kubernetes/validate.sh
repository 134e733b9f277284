#!/bin/sh
# Checks deploy/kubernetes offline (CTest: kubernetes_manifests, label unit):
#   1. yamllint on every YAML file (settings in .yamllint);
#   2. every object file validates against the Kubernetes API's schemas (npm
#      kubernetes-models, installed by `npm ci` in validate/) and against
#      wbsched's rules for its Jobs (validate/validate.mjs);
#   3. base/wbsched.yaml sets only settings that wbsched has
#      (config/wbsched.yaml lists them all);
#   4. `kubectl kustomize` renders base/ and examples/ (offline), and every
#      rendered object validates too.
# A missing tool (yamllint, node, kubectl) skips its step, and the script
# then exits 77 (CTest: skipped) - except with CI=true, where it fails.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
status=0
missing=""

skip() {
	echo "validate: $1 not found: $2 skipped"
	missing="$missing $1"
}

if command -v yamllint >/dev/null 2>&1; then
	echo "== yamllint"
	yamllint -s -c "$here/.yamllint" "$here/base" "$here/examples" || status=1
else
	skip yamllint "the YAML lint"
fi

have_node=false
if command -v node >/dev/null 2>&1; then
	have_node=true
	if [ ! -d "$here/validate/node_modules/kubernetes-models" ]; then
		(cd "$here/validate" && npm ci --no-audit --no-fund --loglevel=error) || status=1
	fi
	echo "== the object files"
	# shellcheck disable=SC2046 # file names here have no spaces
	node "$here/validate/validate.mjs" $(find "$here/base" "$here/examples" -name '*.yaml' \
		! -name kustomization.yaml ! -name wbsched.yaml | sort) || status=1
else
	skip node "the schema validation"
fi

echo "== base/wbsched.yaml"
bad_keys=$(sed -n 's/^\([a-z_]*\):.*/\1/p' "$here/base/wbsched.yaml" | while read -r key; do
	grep -q "^# $key:" "$top/config/wbsched.yaml" || echo "$key"
done)
if [ -n "$bad_keys" ]; then
	echo "FAIL base/wbsched.yaml: unknown settings: $(printf '%s ' $bad_keys)"
	status=1
fi

if command -v kubectl >/dev/null 2>&1; then
	for dir in base examples; do
		echo "== kubectl kustomize $dir"
		if ! out=$(kubectl kustomize "$here/$dir"); then
			status=1
			continue
		fi
		if $have_node; then
			printf '%s\n' "$out" | node "$here/validate/validate.mjs" - || status=1
		fi
	done
else
	skip kubectl "rendering with kustomize"
fi

if [ "$status" -ne 0 ]; then
	echo "validate: FAILED"
	exit 1
fi
if [ -n "$missing" ]; then
	if [ "${CI:-}" = true ]; then
		echo "validate: CI must have:$missing"
		exit 1
	fi
	exit 77
fi
echo "validate: every manifest renders and validates"
