"""Python config files: _base_ inheritance, --cfg-options, dumping."""
import pytest

from sts3d.config import ConfigError, apply_options, dump_config, load_config, parse_value


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def config_tree(tmp_path):
    write(tmp_path / "_base_" / "model.py",
          "model = dict(type='Recognizer3D', backbone=dict(depth=50, reshape_t=False),\n"
          "             cls_head=dict(num_classes=400, dropout_ratio=0.5))\n"
          "optimizer = dict(type='SGD', lr=0.1, momentum=0.9)\n")
    write(tmp_path / "_base_" / "runtime.py", "total_epochs = 100\nload_from = None\nimport os\n")
    return write(tmp_path / "exp" / "child.py",
                 "_base_ = ['../_base_/model.py', '../_base_/runtime.py']\n"
                 "model = dict(backbone=dict(reshape_t=True))\n"
                 "optimizer = dict(_delete_=True, type='AdamW', lr=1e-3)\n"
                 "total_epochs = 50\n"
                 "def helper():\n    return 1\n")


def test_base_inheritance_merges_key_by_key(config_tree):
    cfg = load_config(config_tree)
    assert cfg.model.backbone == {"depth": 50, "reshape_t": True}
    assert cfg.model.cls_head.num_classes == 400
    assert cfg.optimizer == {"type": "AdamW", "lr": 1e-3}  # _delete_ replaced the inherited dict
    assert cfg.total_epochs == 50 and cfg.load_from is None
    assert "os" not in cfg and "helper" not in cfg


def test_cfg_options_override_with_literals_and_strings(config_tree):
    cfg = load_config(config_tree, ["load_from=/ckpt/model_best.pth.tar", "model.cls_head.num_classes=10",
                                    "optimizer.lr=0.01", "data.train.ann_file=train list.txt",
                                    "model.backbone.reshape_t=False", "optimizer.lr=0.02", "x=[1, 2]"])
    assert cfg.load_from == "/ckpt/model_best.pth.tar"
    assert cfg.model.cls_head.num_classes == 10
    assert cfg.optimizer.lr == 0.02  # the later of two equal keys wins
    assert cfg.data.train.ann_file == "train list.txt"
    assert cfg.model.backbone.reshape_t is False and cfg.x == [1, 2]


def test_dump_reads_back_to_the_same_settings(config_tree, tmp_path):
    cfg = load_config(config_tree, ["model.cls_head.num_classes=7"])
    again = load_config(dump_config(cfg, tmp_path / "work" / "resolved.py"))
    assert {k: v for k, v in again.items() if k != "filename"} == {k: v for k, v in cfg.items() if k != "filename"}


def test_bad_configs_name_the_file_and_line(tmp_path):
    bad = write(tmp_path / "bad.py", "a = 1\nb = (\n")
    with pytest.raises(ConfigError, match=r"bad.py:\d+"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.py")
    loop = write(tmp_path / "loop.py", "_base_ = 'loop.py'\n")
    with pytest.raises(ConfigError, match="circular"):
        load_config(loop)
    with pytest.raises(ConfigError, match="key=value"):
        apply_options({}, ["novalue"])
    with pytest.raises(ConfigError, match="is not a dict"):
        apply_options({"a": 1}, ["a.b=2"])


def test_parse_value():
    assert parse_value("1e-3") == 1e-3 and parse_value("None") is None and parse_value("abc") == "abc"
    assert parse_value("(1, 2)") == (1, 2)
    # mmcv's DictAction reads true/false in any case; the string 'false' would switch STS *on*
    assert parse_value("false") is False and parse_value("TRUE") is True and parse_value("False") is False
    assert parse_value("falsey") == "falsey"
