"""Export to Hugging Face (mode `export`):
`distill-ret export --config=configs/export.py:checkpoint --workdir=workdirs/export --config.checkpoint.workdir=RUN`.

Presets: `checkpoint` (a training run's orbax checkpoint; architecture from the run's model.init_from unless
model.config_dir is set), `hf` (re-export a Hugging Face directory given as input_dir, e.g. a task checkpoint
reduced to BertModel/BertForSequenceClassification, or a sharded one written as one model.safetensors).
"""
import importlib.util
import pathlib

import ml_collections

_COMMON = importlib.util.spec_from_file_location("configs_common", pathlib.Path(__file__).with_name("common.py"))
common = importlib.util.module_from_spec(_COMMON)
_COMMON.loader.exec_module(common)

PRESETS = ("checkpoint", "hf")  # the value of config.source


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    preset = common.pick_preset(PRESETS, arg, __file__)
    config = ml_collections.ConfigDict()
    config.source = preset  # "checkpoint": a training run's checkpoint; "hf": a Hugging Face directory
    config.input_dir = ""  # source=hf: the Hugging Face directory to import

    config.checkpoint = ml_collections.ConfigDict()
    config.checkpoint.workdir = ""  # source=checkpoint: the training run's --workdir (holds checkpoints/<step>/)
    config.checkpoint.step = -1  # step to export; -1 = the latest complete checkpoint

    config.model = ml_collections.ConfigDict()
    config.model.config_dir = ""  # runs without a saved model record: config.json of the model; "" = model.init_from
    config.model.tower = "document"  # BiEncoder checkpoints: the tower exported as BertModel ("query" | "document")

    config.export = ml_collections.ConfigDict()
    config.export.output_dir = ""  # where the Hugging Face directory is written; "" = <workdir>/hf_model
    config.export.tokenizer_dir = ""  # tokenizer files to copy beside the weights; "" = the run's or the model's
    config.export.identifiers_dir = ""  # T5 (DGR) students: directory whose identifiers.jsonl is exported; "" = none
    config.export.overwrite = False  # True: write into a non-empty output_dir, replacing only the exported file names
    return config
