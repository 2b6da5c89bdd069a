"""Caption stage: a VLM captions each canonical image (VeCLIP's "visual concepts").

    from veclip.caption.stage import run_caption        # the stage (jobs/caption.py)
    from veclip.caption.tiny import build_tiny_llava    # random-weight test model (meaningless captions)

Modules: models.py (load any HF VLM, batched inputs, generate), prompt.py (paper prompt, chat
template), clean.py (output cleaning), predict.py (worker-side decode + caption), stage.py (Spark,
Delta, resumable slices), tiny.py (tiny random models for tests).
"""
