##@ Where stages run (every stage target) | LAUNCHER=local|slurm, LAUNCH_CONFIG, NPROC, PARTITION, NODES, GPUS_PER_NODE, CPUS_PER_TASK, MEM_GB, TIME, ACCOUNT, QOS, JOB_NAME, DEPENDENCY, JOB_ID_FILE, WAIT, SLURM_FOLDER, LAUNCH_ARGS (the launcher options themselves)
# Where stages run (every stage target uses $(RUN) = $(PY) -m lewel_bench.launch $(LAUNCH_ARGS) --).
#   LAUNCHER=local            run in this shell (default); NPROC=2 spawns 2 DDP processes torchrun-style
#   LAUNCHER=slurm            submit through submitit: one task per GPU, requeue + resume on preemption
#   LAUNCH_CONFIG=launch/slurm.yaml  cluster defaults (partition, account, GPUs, time, ...)
#   PARTITION= NODES= GPUS_PER_NODE= CPUS_PER_TASK= MEM_GB= TIME= ACCOUNT= QOS= JOB_NAME=
#   DEPENDENCY=afterok:<id>   start after another job;  JOB_ID_FILE=f  append the job id to f;  WAIT=1  wait
# Example: make pretrain EXP=lewel_b LAUNCHER=slurm LAUNCH_CONFIG=launch/slurm.yaml PARTITION=gpu TIME=48:00:00
LAUNCH_CONFIG ?=
NPROC         ?=
PARTITION     ?=
NODES         ?=
GPUS_PER_NODE ?=
CPUS_PER_TASK ?=
MEM_GB        ?=
TIME          ?=
ACCOUNT       ?=
QOS           ?=
JOB_NAME      ?=
DEPENDENCY    ?=
JOB_ID_FILE   ?=
WAIT          ?=
SLURM_FOLDER  ?=

_launch_opt = $(if $(strip $(2)),$(1) "$(strip $(2))")
LAUNCH_ARGS += $(call _launch_opt,--config,$(LAUNCH_CONFIG)) $(call _launch_opt,--nproc,$(NPROC)) \
  $(call _launch_opt,--partition,$(PARTITION)) $(call _launch_opt,--nodes,$(NODES)) \
  $(call _launch_opt,--gpus-per-node,$(GPUS_PER_NODE)) $(call _launch_opt,--cpus-per-task,$(CPUS_PER_TASK)) \
  $(call _launch_opt,--mem-gb,$(MEM_GB)) $(call _launch_opt,--time,$(TIME)) \
  $(call _launch_opt,--account,$(ACCOUNT)) $(call _launch_opt,--qos,$(QOS)) \
  $(call _launch_opt,--job-name,$(JOB_NAME)) $(call _launch_opt,--dependency,$(DEPENDENCY)) \
  $(call _launch_opt,--job-id-file,$(JOB_ID_FILE)) $(call _launch_opt,--folder,$(SLURM_FOLDER)) \
  $(if $(filter 1 yes true,$(WAIT)),--wait)
