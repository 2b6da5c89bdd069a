"""Config of the train stage (gold -> petastorm -> open_clip trainer -> MLflow model)."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, model_validator

from veclip.config.base import Section


class TrainConfig(Section):
    model: str = Field("ViT-B-16", description="open_clip model name (ViT-B-16 is the paper's setting) or a "
                       "config in veclip/clip_configs/ (`veclip-tiny`, `veclip-small` for CPU).")
    pretrained: Optional[str] = Field(None, description="Initial weights: null = from scratch (as the paper); a "
                                      "training checkpoint `step_*.pt`, an open_clip model folder, or a weights file.")
    gold_version: Optional[int] = Field(None, ge=0, description="Delta version of the gold table to train on "
                                        "(null = latest, resolved at start and recorded in the run; `--resume` "
                                        "reuses the version of the run it resumes).")
    p_vecap: float = Field(0.5, ge=0.0, le=1.0, description="Mixed training: per sample the text is the VeCap "
                           "with this probability, else the AltText (0 = AltText-only CLIP baseline, 1 = VeCap "
                           "only); a missing VeCap falls back to the AltText.")
    seed: int = Field(0, description="Seed of everything random: model init, text choice, crops, data order.")
    epochs: int = Field(1, ge=1, description="Passes over the gold table (training stops at epochs or max_steps, "
                        "whichever comes first).")
    max_steps: Optional[int] = Field(None, ge=1, description="Stop after this many optimizer steps "
                                     "(null = epochs x steps per epoch).")
    batch_size: int = Field(256, ge=2, description="Samples per rank per step (the global batch is "
                            "batch_size x processes; the contrastive loss sees all of it).")
    lr: float = Field(5e-4, gt=0, description="Peak learning rate of AdamW.")
    warmup_steps: int = Field(2000, ge=0, description="Linear warmup steps before the cosine decay to 0.")
    weight_decay: float = Field(0.2, ge=0, description="AdamW weight decay (open_clip's default; not applied to gains, biases "
                                "and the logit scale).")
    beta1: float = Field(0.9, ge=0, lt=1, description="AdamW beta1.")
    beta2: float = Field(0.98, ge=0, lt=1, description="AdamW beta2.")
    eps: float = Field(1e-6, gt=0, description="AdamW epsilon.")
    grad_clip: Optional[float] = Field(1.0, gt=0, description="Clip the global gradient norm to this (null = off).")
    crop_scale_min: float = Field(0.9, gt=0, le=1, description="Augmentation: random resized crop keeps "
                                  "this fraction of the image area or more (1 = resize only).")
    image_size: Optional[int] = Field(None, ge=16, description="Training image side in pixels "
                                      "(null = the model's; another value resizes the model's positional embedding).")
    mode: Literal["single", "local", "cluster"] = Field("local", description="`single`: one process, in the job "
                                                         "(debugging); `local`: TorchDistributor with num_processes "
                                                         "on this machine; `cluster`: TorchDistributor on the "
                                                         "cluster's workers.")
    num_processes: int = Field(1, ge=1, description="Training processes (ranks); gloo on CPU, nccl on GPUs.")
    use_gpu: bool = Field(False, description="Train on GPUs (one per process, bf16 autocast); fp32 on CPU.")
    reader_pool: Literal["process", "dummy"] = Field("process", description="petastorm pool per rank: `process` "
                                                     "(decode in worker processes) or `dummy` (in the training "
                                                     "process). The thread pool is refused: it was seen to "
                                                     "return no rows for a whole epoch without an error.")
    reader_workers: int = Field(1, ge=1, description="petastorm worker processes per rank (JPEG decode, crop, "
                                "tokenise). Each reads its own files, interleaved in a fixed order.")
    shuffle_buffer: int = Field(1024, ge=0, description="Rows held per rank to shuffle across row groups "
                                "(seeded by seed and epoch; 0 = row-group order).")
    checkpoint_every: int = Field(1000, ge=1, description="Save a checkpoint every this many steps (and at the end).")
    keep_checkpoints: int = Field(3, ge=1, description="Keep the latest this many checkpoints of a run.")
    checkpoint_dir: Optional[str] = Field(None, description="Checkpoints of this run (default: "
                                          "<paths.checkpoints_dir>/<run_name>).")
    run_name: Optional[str] = Field(None, description="Name of the training run (null = `clip-<time>`; "
                                    "`--resume` without a name continues the most recent run).")
    log_every: int = Field(1, ge=1, description="Log metrics to MLflow every this many steps.")
    registered_model: str = Field("veclip-clip", description="Model registry name of the trained model "
                                  "(three-level `catalog.schema.name` with Unity Catalog); the new version "
                                  "gets the alias `candidate`.")

    @model_validator(mode="after")
    def _check(self) -> "TrainConfig":
        if self.mode == "single" and self.num_processes != 1:
            raise ValueError(f"train.mode=single runs one process, but train.num_processes={self.num_processes}")
        return self
