# Run settings read by tools/lazyconfig_train_net.py (retina_focal.engine.lazy) and by
# Detectron2's own; the defaults are the YAML configs' (Detectron2's defaults and
# MODEL.RETINA_FOCAL's).
train = dict(
    output_dir="./output",
    init_checkpoint="",  # MODEL.WEIGHTS
    max_iter=90000,  # SOLVER.MAX_ITER
    # SOLVER.AMP.ENABLED (bfloat16 autocast on a CPU) and MODEL.RETINA_FOCAL.CPU_BFLOAT16
    # ("native": bfloat16 only on a CPU with bfloat16 instructions, float32 elsewhere; "always")
    amp=dict(enabled=False, cpu_bfloat16="native"),
    ddp=dict(broadcast_buffers=False, find_unused_parameters=False, fp16_compression=False),
    checkpointer=dict(period=5000, max_to_keep=100),  # SOLVER.CHECKPOINT_PERIOD
    eval_period=0,  # TEST.EVAL_PERIOD (0: only at the end)
    log_period=20,
    device="cuda",  # MODEL.DEVICE
    seed=-1,  # SEED (negative: a random one, saved in checkpoints for --resume)
    # device speed-ups (retina_focal.engine.device), MODEL.RETINA_FOCAL.MEMORY_FORMAT /
    # FOLD_FROZEN_BN: "auto" is channels-last on a CPU, NCHW elsewhere
    memory_format="auto",
    fold_frozen_bn=True,
)
