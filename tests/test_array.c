/* Slurm job array specs. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include "wbsched/array.h"
#include "wbsched/error.h"

TestSuite(array, .timeout = 5);

struct good {
	const char *spec;
	const char *ids; /* joined by ',' */
};

static struct good goods[] = {
	{ "0-2", "0,1,2" },	       { "7", "7" },
	{ "1,3,5", "1,3,5" },	       { "0-15:4", "0,4,8,12" },
	{ "1-7:2%2", "1,3,5,7" },      { "0-1,10-11", "0,1,10,11" },
	{ "4-4", "4" },		       { "0-9%3", "0,1,2,3,4,5,6,7,8,9" },
};

ParameterizedTestParameters(array, expands_specs)
{
	return cr_make_param_array(struct good, goods, sizeof(goods) / sizeof(goods[0]));
}

ParameterizedTest(struct good *c, array, expands_specs)
{
	uint32_t *ids = NULL;
	size_t n = 0;
	char joined[256] = "";

	cr_assert_eq(wbs_array_parse(c->spec, &ids, &n, NULL), 0, "%s", c->spec);
	for (size_t i = 0; i < n; i++)
		snprintf(joined + strlen(joined), sizeof(joined) - strlen(joined), "%s%u",
			 i ? "," : "", ids[i]);
	cr_assert_str_eq(joined, c->ids);
	free(ids);
}

static const char *bads[] = { "", "a", "3-1", "1-", "-1", "1,,2", "0-4:0", "1%", "1 ", "5000000" };

ParameterizedTestParameters(array, refuses_bad_specs)
{
	return cr_make_param_array(const char *, bads, sizeof(bads) / sizeof(bads[0]));
}

ParameterizedTest(const char **spec, array, refuses_bad_specs)
{
	struct wbs_error err = { 0 };
	uint32_t *ids = NULL;
	size_t n = 0;
	char want[128];

	cr_assert_eq(wbs_array_parse(*spec, &ids, &n, &err), -EINVAL, "'%s'", *spec);
	snprintf(want, sizeof(want), "invalid array spec '%s'", *spec);
	cr_assert(strncmp(err.msg, want, strlen(want)) == 0, "%s", err.msg);
	cr_assert_null(ids);
}

Test(array, caps_the_number_of_tasks)
{
	struct wbs_error err = { 0 };
	uint32_t *ids = NULL;
	size_t n = 0;

	cr_assert_eq(wbs_array_parse("0-200000", &ids, &n, &err), -EINVAL);
	cr_assert_str_eq(err.msg, "array spec '0-200000' names more than 100000 tasks");
}
