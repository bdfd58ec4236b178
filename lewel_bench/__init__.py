"""lewel-bench: the one shared home for what every stage uses.

Modules:
    io          atomic file writes (temp file, fsync, rename)
    config      YAML experiment configs with ``_base_`` inheritance and validated ``key=value`` overrides
    declare     what an evaluation (``eval_*/declaration.py``) and a method (its config's ``paper``) declare
    chain       the planner of ``make all``: a method's declared chain -> the stage commands
    stage       the evaluation contract: arguments, run identity, output folder, record
    tables      the papers' tables regenerated from the records (declared in ``results/paper/tables.yaml``)
    report      the static report page
    registry    a tiny name -> builder registry (methods, heads, evaluations)
    models      torchvision ResNet backbones and their feature dimensions
    checkpoint  backbone export and the checkpoint intake every evaluation shares
    records     result records (one JSON file per evaluation, written atomically)
    dist        torch.distributed set-up from torchrun or SLURM environment variables
    utils       logging, seeding, RNG state capture, git commit
    data        the embedded mini benchmark generator and dataset readers
"""

__version__ = "0.1.0"
