"""Training: data preparation (video folders and synthetic clips -> safetensors cache), the cache
dataset, and the trainers behind ``stillmotion train diffusion|lora|refiner``.

Modules: ``config`` (flat dataclass configs from YAML/TOML + overrides), ``checkpoint`` (exact-resume
checkpoints, nothing pickled), ``runlog`` (CSV log, step timing), ``cache`` (the shard format),
``prepare`` (videos -> cache), ``synthetic`` (photos + warp engine -> cache), ``camera`` (static-camera
test), ``dataset`` (torch Dataset + deterministic sampler), ``diffusion`` / ``lora`` (trainers).
"""
