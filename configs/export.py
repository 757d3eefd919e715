"""Export to Hugging Face (mode `export`):
`distill-ret export --config=configs/export.py:checkpoint --workdir=workdirs/export --config.checkpoint.workdir=RUN`.

Presets: `checkpoint` (a training run's orbax checkpoint; architecture from the run's model.init_from unless
model.config_dir is set), `hf` (re-export a Hugging Face directory given as input_dir, e.g. a task checkpoint
reduced to BertModel/BertForSequenceClassification, or a sharded one written as one model.safetensors).
"""
import ml_collections

PRESETS = ("checkpoint", "hf")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    preset = arg or "checkpoint"
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r} for configs/export.py; presets: {list(PRESETS)}")
    config = ml_collections.ConfigDict()
    config.source = preset  # "checkpoint": a training run's checkpoint; "hf": a Hugging Face directory
    config.input_dir = ""  # source=hf: the Hugging Face directory to import

    config.checkpoint = ml_collections.ConfigDict()
    config.checkpoint.workdir = ""  # source=checkpoint: the training run's --workdir (holds checkpoints/<step>/)
    config.checkpoint.step = -1  # step to export; -1 = the latest complete checkpoint

    config.model = ml_collections.ConfigDict()
    config.model.config_dir = ""  # directory whose config.json describes the model; "" = the run's model.init_from
    config.model.tower = "document"  # BiEncoder checkpoints: the tower exported as BertModel ("query" | "document")

    config.export = ml_collections.ConfigDict()
    config.export.output_dir = ""  # where the Hugging Face directory is written; "" = <workdir>/hf_model
    config.export.tokenizer_dir = ""  # tokenizer to save beside the weights; "" = the run's tokenizer or config_dir
    return config
