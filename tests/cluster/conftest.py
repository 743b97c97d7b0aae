from tests.training.conftest import snapshot_root  # noqa: F401  (the real-footage snapshot fixture)
