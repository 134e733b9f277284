/*
 * spank_wbsched.so loads the way slurmd, slurmstepd, sbatch and srun load it:
 * dlopen(RTLD_NOW | RTLD_LOCAL) into a process that provides the slurm_* and
 * spank_* functions.  This binary provides them as stubs (it exports its
 * symbols: ENABLE_EXPORTS), so every import must resolve at load time, the
 * SPANK entry points must be visible, and nothing else may be.
 */
#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include <slurm/slurm.h>
#include <slurm/spank.h>

/* ---- stubs for every slurm_ and spank_ symbol the plugin imports ----------- */

#define STUB __attribute__((visibility("default"), used))

STUB void slurm_info(const char *fmt, ...)
{
	(void)fmt;
}

STUB void slurm_error(const char *fmt, ...)
{
	(void)fmt;
}

STUB void slurm_debug(const char *fmt, ...)
{
	(void)fmt;
}

STUB int slurm_load_job(job_info_msg_t **resp, uint32_t job_id, uint16_t show_flags)
{
	(void)job_id;
	(void)show_flags;
	*resp = NULL;
	return -1;
}

STUB void slurm_free_job_info_msg(job_info_msg_t *msg)
{
	(void)msg;
}

STUB spank_context_t spank_context(void)
{
	return S_CTX_ERROR;
}

STUB spank_err_t spank_get_item(spank_t spank, spank_item_t item, ...)
{
	(void)spank;
	(void)item;
	return ESPANK_NOT_AVAIL;
}

STUB spank_err_t spank_getenv(spank_t spank, const char *var, char *buf, int len)
{
	(void)spank;
	(void)var;
	(void)buf;
	(void)len;
	return ESPANK_ENV_NOEXIST;
}

STUB spank_err_t spank_setenv(spank_t spank, const char *var, const char *val, int overwrite)
{
	(void)spank;
	(void)var;
	(void)val;
	(void)overwrite;
	return ESPANK_SUCCESS;
}

STUB spank_err_t spank_job_control_setenv(spank_t sp, const char *name, const char *value,
					  int overwrite)
{
	(void)sp;
	(void)name;
	(void)value;
	(void)overwrite;
	return ESPANK_SUCCESS;
}

STUB spank_err_t spank_option_register(spank_t spank, struct spank_option *opt)
{
	(void)spank;
	(void)opt;
	return ESPANK_SUCCESS;
}

/* The names above, to compare with what the plugin imports. */
static const char *const stubbed[] = {
	"slurm_info",	  "slurm_error",   "slurm_debug",	   "slurm_load_job",
	"slurm_free_job_info_msg", "spank_context", "spank_get_item", "spank_getenv",
	"spank_setenv",	  "spank_job_control_setenv", "spank_option_register",
};

static bool is_stubbed(const char *name)
{
	for (size_t i = 0; i < sizeof(stubbed) / sizeof(stubbed[0]); i++)
		if (strcmp(stubbed[i], name) == 0)
			return true;
	return false;
}

/* ---- nm -D -------------------------------------------------------------------- */

/* The symbol names `nm -D @flag` lists for the plugin, one per line (caller frees). */
static char *nm_names(const char *flag)
{
	char cmd[1024], line[512];
	char *names = calloc(1, 1);
	size_t len = 0;
	FILE *p;

	cr_assert_not_null(names);
	snprintf(cmd, sizeof(cmd), "'%s' -D %s '%s'", WBS_NM, flag, WBS_PLUGIN);
	p = popen(cmd, "r");
	cr_assert_not_null(p, "cannot run %s", cmd);
	while (fgets(line, sizeof(line), p)) {
		/* "ADDR T name", "         U name@VERSION", "w name" */
		char *name = strrchr(line, ' ');
		size_t n;

		cr_assert_not_null(name, "unexpected nm line: %s", line);
		name++;
		n = strcspn(name, "@\n");
		names = realloc(names, len + n + 2);
		cr_assert_not_null(names);
		memcpy(names + len, name, n);
		len += n;
		names[len++] = '\n';
		names[len] = '\0';
	}
	cr_assert_eq(pclose(p), 0, "%s failed", cmd);
	return names;
}

/* ---- tests ------------------------------------------------------------------- */

Test(plugin_load, every_slurm_and_spank_import_is_one_a_slurm_process_provides)
{
	char *names = nm_names("--undefined-only");

	for (char *save = NULL, *n = strtok_r(names, "\n", &save); n; n = strtok_r(NULL, "\n", &save))
		if (strncmp(n, "slurm_", 6) == 0 || strncmp(n, "spank_", 6) == 0)
			cr_expect(is_stubbed(n),
				  "the plugin imports %s: add a stub here, and make sure every "
				  "Slurm command and daemon that loads the plugin exports it",
				  n);
	free(names);
}

Test(plugin_load, dlopen_resolves_every_symbol_at_once_and_finds_the_spank_entry_points)
{
	static const char *const entry_points[] = {
		"slurm_spank_init",	      "slurm_spank_init_post_opt", "slurm_spank_job_prolog",
		"slurm_spank_job_epilog",    "slurm_spank_user_init",
		"slurm_spank_task_init_privileged", "slurm_spank_exit",
	};
	void *h = dlopen(WBS_PLUGIN, RTLD_NOW | RTLD_LOCAL);
	const char *name, *type;
	const unsigned *version;

	cr_assert_not_null(h, "dlopen: %s", dlerror());
	for (size_t i = 0; i < sizeof(entry_points) / sizeof(entry_points[0]); i++)
		cr_expect_not_null(dlsym(h, entry_points[i]), "no %s", entry_points[i]);

	name = dlsym(h, "plugin_name");
	cr_assert_not_null(name);
	cr_expect_str_eq(name, "wbsched");
	type = dlsym(h, "plugin_type");
	cr_assert_not_null(type);
	cr_expect_str_eq(type, "spank");
	version = dlsym(h, "spank_plugin_version");
	cr_assert_not_null(version, "no spank_plugin_version");
	cr_expect_eq(*version, 1u);
	cr_expect_not_null(dlsym(h, "plugin_version"));
	dlclose(h);
}

Test(plugin_load, the_plugins_internal_functions_stay_hidden)
{
	static const char *const internal[] = {
		"plugin_job_at_submit", "plugin_job_from_env", "plugin_exec",
		"plugin_outcome",	"plugin_argv_base",    "wbs_config_set",
		"wbs_config_init",	"wbs_config_load_args", "wbs_log",
		"wbs_run_id_generate",	"wbs_netrc_find",      "opt_cb",
	};
	void *h = dlopen(WBS_PLUGIN, RTLD_NOW | RTLD_LOCAL);

	cr_assert_not_null(h, "dlopen: %s", dlerror());
	for (size_t i = 0; i < sizeof(internal) / sizeof(internal[0]); i++)
		cr_expect_null(dlsym(h, internal[i]), "%s is exported by the plugin", internal[i]);
	dlclose(h);
}

Test(plugin_load, the_dynamic_symbol_table_holds_only_the_spank_interface)
{
	static const char *const allowed[] = { "plugin_name", "plugin_type", "plugin_version",
					       "spank_plugin_version" };
	char *names = nm_names("--defined-only");
	int count = 0;

	for (char *save = NULL, *n = strtok_r(names, "\n", &save); n;
	     n = strtok_r(NULL, "\n", &save)) {
		bool ok = strncmp(n, "slurm_spank_", 12) == 0;

		for (size_t i = 0; !ok && i < sizeof(allowed) / sizeof(allowed[0]); i++)
			ok = strcmp(n, allowed[i]) == 0;
		cr_expect(ok, "the plugin exports %s", n);
		count++;
	}
	cr_expect_geq(count, 5, "nm listed only %d defined symbols", count);
	free(names);
}
