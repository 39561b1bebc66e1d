"""Check Label Studio tasks with the real label-studio-sdk (run by tests/test_preannotate.py in a
separate, isolated interpreter that sees only the SDK's pinned install; not a test module).

    python -S labelstudio_check.py TASKS_JSON LABELING_CONFIG_XML WORK_DIR

Validates every task's prediction with the SDK's `LabelInterface.validate_prediction`, then
gives the predictions to the SDK's `Converter` as annotations (it reads only those) and
converts to COCO inside WORK_DIR, with downloads, local file reads and every HTTP request
refused. Prints JSON: {"errors": [...], "images": [{"width", "height", "boxes": [[label, x, y, w, h]]}]}
in task order.
"""
import json
import os
import sys

for var in ("LABEL_STUDIO_URL", "LABEL_STUDIO_HOST", "LABEL_STUDIO_API_KEY", "LABEL_STUDIO_ACCESS_TOKEN",
            "LOCAL_FILES_DOCUMENT_ROOT"):
    os.environ.pop(var, None)  # the converter would contact a server or read files with these

import requests  # noqa: E402
from label_studio_sdk.converter import Converter  # noqa: E402
from label_studio_sdk.label_interface import LabelInterface  # noqa: E402


class NoNetwork(requests.Session):
    def request(self, method, url, *args, **kwargs):
        raise RuntimeError(f"network access attempted: {method} {url}")


def main(tasks_path, config_path, work):
    tasks = json.load(open(tasks_path, encoding="utf-8"))
    config = open(config_path, encoding="utf-8").read()
    interface = LabelInterface(config)
    errors = [str(e) for t in tasks for p in t["predictions"] for e in interface.validate_prediction(p, return_errors=True)]
    export = [{"id": i, "data": t["data"], "annotations": [{"id": i, "result": t["predictions"][0]["result"]}]}
              for i, t in enumerate(tasks, start=1)]
    export_path = os.path.join(work, "export.json")
    json.dump(export, open(export_path, "w", encoding="utf-8"))
    converter = Converter(config=config, project_dir=work, upload_dir=os.path.join(work, "upload"),
                          download_resources=False, local_files_resolver=lambda path: None, http_session=NoNetwork())
    converter.convert(export_path, os.path.join(work, "coco"), "COCO", is_dir=False)
    coco = json.load(open(os.path.join(work, "coco", "result.json"), encoding="utf-8"))
    names = {c["id"]: c["name"] for c in coco["categories"]}
    images = []
    for image in sorted(coco["images"], key=lambda im: im["id"]):
        boxes = [[names[a["category_id"]], *a["bbox"]] for a in coco["annotations"] if a["image_id"] == image["id"]]
        images.append({"width": image["width"], "height": image["height"], "boxes": boxes})
    print(json.dumps({"errors": errors, "images": images}))


if __name__ == "__main__":
    main(*sys.argv[1:4])
