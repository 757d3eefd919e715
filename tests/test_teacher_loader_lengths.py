"""A teacher asked for more tokens than its model has positions is one ConfigError naming config.teacher.max_length."""
import ml_collections
import pytest

from distill_ret.errors import ConfigError
from distill_ret.teachers import loader
from tests.teacher_helpers import write_torch_cross_encoder


@pytest.mark.parametrize("kind,max_length", [("cross_encoder", 0), ("dense", 65)])
def test_teacher_longer_than_its_positions_is_a_config_error(tmp_path, kind, max_length):
    write_torch_cross_encoder(tmp_path / "hf")  # 64 positions; 0 asks for the default 256
    section = ml_collections.ConfigDict(dict(kind=kind, path=str(tmp_path / "hf"), max_length=max_length,
                                             batch_size=4, bucket_step=16, show_progress=False, pooling="mean",
                                             normalize=True))
    with pytest.raises(ConfigError, match=rf"^config.teacher.max_length={max_length} \(0 = the default\): "
                                          r"max_length (256|65) exceeds the model's 64 positions$"):
        loader.load_teacher(section)
