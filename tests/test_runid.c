/* Run ids, entity and project names, and the run state rules. */
#include <errno.h>
#include <string.h>

#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include "wbsched/config.h"
#include "wbsched/error.h"
#include "wbsched/run.h"
#include "wbsched/runid.h"
#include "wbsched/state.h"

TestSuite(runid, .timeout = 5);

Test(runid, generated_ids_are_8_characters_of_a_z_0_9_and_differ)
{
	char a[WBS_RUN_ID_LEN + 1], b[WBS_RUN_ID_LEN + 1];

	cr_assert_eq(wbs_run_id_generate(a, NULL), 0);
	cr_assert_eq(wbs_run_id_generate(b, NULL), 0);
	cr_assert_eq(strlen(a), 8);
	cr_assert_eq(strspn(a, "abcdefghijklmnopqrstuvwxyz0123456789"), 8);
	cr_assert_str_neq(a, b);
	cr_assert_eq(wbs_run_id_validate(a, NULL), 0);
}

struct id_case {
	const char *id;
	const char *msg; /* NULL: valid */
};

static struct id_case id_cases[] = {
	{ "abc123", NULL },
	{ "job-42_x.y", NULL },
	{ "", "invalid run id '': must not be empty" },
	{ "a b", "invalid run id 'a b': white space or control character" },
	{ "a/b", "invalid run id 'a/b': '/' is not allowed" },
	{ "a:b", "invalid run id 'a:b': ':' is not allowed" },
	{ "a?b", "invalid run id 'a?b': '?' is not allowed" },
	{ "a#b", "invalid run id 'a#b': '#' is not allowed" },
	{ "it's", "invalid run id 'it's': ''' is not allowed" },
	{ "a%20", "invalid run id 'a%20': '%' is not allowed" },
	{ "x1234567890123456789012345678901234567890123456789012345678901234",
	  "invalid run id 'x1234567890123456789012345678901234567890123456789012345678901234...': longer than 64 characters" },
};

ParameterizedTestParameters(runid, given_ids_are_checked)
{
	return cr_make_param_array(struct id_case, id_cases, sizeof(id_cases) / sizeof(id_cases[0]));
}

ParameterizedTest(struct id_case *c, runid, given_ids_are_checked)
{
	struct wbs_error err = { 0 };
	int r = wbs_run_id_validate(c->id, &err);

	if (!c->msg) {
		cr_assert_eq(r, 0, "%s: %s", c->id, err.msg);
		return;
	}
	cr_assert_eq(r, -EINVAL);
	cr_assert_str_eq(err.msg, c->msg);
}

Test(runid, run_paths_fill_in_from_the_configuration)
{
	struct wbs_config cfg;
	struct wbs_run_ref ref = { 0 };
	struct wbs_error err = { 0 };

	wbs_config_init(&cfg);
	cr_assert_eq(wbs_run_ref_parse("e/p/r", &cfg, &ref, NULL), 0);
	cr_assert_str_eq(ref.entity, "e");
	cr_assert_str_eq(ref.project, "p");
	cr_assert_str_eq(ref.id, "r");
	cr_assert_eq(wbs_run_ref_parse("r2", &cfg, &ref, NULL), 0);
	cr_assert_null(ref.entity);
	cr_assert_str_eq(ref.project, "uncategorized");
	cr_assert_eq(wbs_config_set(&cfg, "entity", "team", NULL, NULL), 0);
	cr_assert_eq(wbs_run_ref_parse("p3/r3", &cfg, &ref, NULL), 0);
	cr_assert_str_eq(ref.entity, "team");
	cr_assert_str_eq(ref.project, "p3");
	cr_assert_eq(wbs_run_ref_parse("e//r", &cfg, &ref, &err), -EINVAL);
	cr_assert_str_eq(err.msg, "invalid project '': must not be empty");
	/* a failed parse leaves the reference as it was */
	cr_assert_str_eq(ref.id, "r3");
	wbs_run_ref_release(&ref);
	wbs_config_release(&cfg);
}

Test(runid, no_path_takes_wandb_run_id)
{
	struct wbs_config cfg;
	struct wbs_run_ref ref = { 0 };
	struct wbs_error err = { 0 };

	wbs_config_init(&cfg);
	unsetenv("WANDB_RUN_ID");
	cr_assert_eq(wbs_run_ref_parse(NULL, &cfg, &ref, &err), -EINVAL);
	cr_assert_str_eq(err.msg, "no run given: name one as ENTITY/PROJECT/RUN_ID or set WANDB_RUN_ID");
	setenv("WANDB_RUN_ID", "fromenv", 1);
	cr_assert_eq(wbs_run_ref_parse(NULL, &cfg, &ref, NULL), 0);
	cr_assert_str_eq(ref.id, "fromenv");
	wbs_run_ref_release(&ref);
}

Test(runid, terminal_and_failure_states)
{
	const char *alive[] = { "pending", "running", "preempting" };
	const char *bad[] = { "failed", "crashed", "killed", "preempted" };

	for (size_t i = 0; i < 3; i++)
		cr_assert_not(wbs_run_state_is_terminal(alive[i]));
	for (size_t i = 0; i < 4; i++) {
		cr_assert(wbs_run_state_is_terminal(bad[i]));
		cr_assert(wbs_run_state_is_failure(bad[i]));
	}
	cr_assert(wbs_run_state_is_terminal("finished"));
	cr_assert_not(wbs_run_state_is_failure("finished"));
	cr_assert_not(wbs_run_state_is_known("paused"));
	cr_assert_not(wbs_run_state_is_terminal(NULL));
}

Test(runid, update_state_follows_the_servers_transitions)
{
	const char *to_pending_ok[] = { "running", "failed", "crashed", "preempted" };
	const char *to_pending_no[] = { "pending", "preempting", "finished", "killed" };

	for (size_t i = 0; i < 4; i++) {
		cr_assert(wbs_run_state_can_update(to_pending_ok[i], "pending"));
		cr_assert_not(wbs_run_state_can_update(to_pending_no[i], "pending"));
	}
	cr_assert(wbs_run_state_can_update("pending", "failed"));
	cr_assert(wbs_run_state_can_update("running", "failed"));
	cr_assert_not(wbs_run_state_can_update("finished", "failed"));
	cr_assert_not(wbs_run_state_can_update("preempting", "failed"));
	cr_assert_not(wbs_run_state_can_update("running", "finished"));
}
