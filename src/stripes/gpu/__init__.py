"""GPU use without network (issue 10): ``pack`` (here: wheels + data archive into ``.gpu/``) and
``check`` (there: ``make gpu-check``, the CUDA attention, throughput and a paper-scale spot check)."""
