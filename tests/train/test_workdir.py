"""Config changes between a run and its restart (tome_jax/train/workdir.py): what blocks a resume."""

import json

from configs import vit_b_tome
from tome_jax.train import workdir as workdir_lib


def test_a_run_saved_before_typed_source_options_still_resumes():
    """Workdirs saved before data.options existed hold data.kind, image_key, label_key, verify_images
    and audio at their defaults: a restart of the same recipe resumes; a non-default value is a change."""
    now = json.loads(vit_b_tome.get_config("runlocal").to_json())
    saved = json.loads(json.dumps(now))
    del saved["data"]["options"]  # never saved then
    saved["data"].update(kind="image", image_key="image", label_key="label", verify_images=True, audio=None)
    assert workdir_lib.breaking_changes(workdir_lib.config_diff(saved, now)) == []
    saved["data"]["kind"] = "array"
    assert workdir_lib.breaking_changes(workdir_lib.config_diff(saved, now)) == [("data.kind", "array", "<missing>")]
