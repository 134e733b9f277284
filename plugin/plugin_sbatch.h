#ifndef WBS_PLUGIN_SBATCH_H
#define WBS_PLUGIN_SBATCH_H

/*
 * What sbatch knows of a job at submit.  SPANK tells an allocator plugin
 * none of it (no job id, no array range), so it is read from sbatch's own
 * option table through Slurm's internal slurm_option_get(), looked up at run
 * time: a Slurm without it (or salloc, srun) just leaves every field NULL.
 */
struct plugin_sbatch {
	char *array; /* --array spec, e.g. "0-15:4%2" */
	char *job_name;
	char *partition;
	char *account;
	char *nodes;
	char *ntasks;
	char *time_limit;
};

/* Fills @ret from sbatch's options; never fails (unknown fields stay NULL). */
void plugin_sbatch_read(struct plugin_sbatch *ret);
void plugin_sbatch_release(struct plugin_sbatch *s);

/* {"slurm": {...}} of what is known, or NULL; caller frees with free(). */
char *plugin_sbatch_config_json(const struct plugin_sbatch *s);

#endif
