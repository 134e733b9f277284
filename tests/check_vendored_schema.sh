#!/bin/sh
# The emulator's schema must stay a verbatim copy of shared/wandb (the W&B
# schema every document is held to).  Skipped where shared/ is not beside the
# checkout, as in a release tarball.
src=$(dirname "$0")/emulator/schema
shared=${WBS_SHARED_WANDB:-$(dirname "$0")/../../shared/wandb}
if [ ! -d "$shared" ]; then
	echo "skipped: no $shared beside the checkout"
	exit 0
fi
status=0
for f in schema.graphql schema-extensions.graphql SOURCE.md; do
	if cmp -s "$shared/$f" "$src/$f"; then
		echo "ok $f"
	else
		echo "FAIL $f differs from $shared/$f"
		status=1
	fi
done
exit $status
