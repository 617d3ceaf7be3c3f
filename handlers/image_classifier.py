"""TorchServe handler for image classification (flowers_vit, flowers_cnn).

Requests carry one image each; the handler only decodes it to a uint8 (3, H, W) tensor. The
scripted model resizes and normalises inside its graph, so any image size is served.
    raw bytes   Content-Type: image/jpeg | image/png | image/webp | application/octet-stream
    multipart   curl -F data=@rose.jpg [-F topk=2]   (the file field: data, file or image)
    JSON        {"b64": "<base64 image>", "topk": 2}
    Vertex AI   {"instances": [{"b64": ...}, ...], "parameters": {"topk": 2}}
    k for any form: an X-TopK: 2 header, or ?topk=2 where TorchServe forwards the query
    (/invocations?model_name=flowers_vit&topk=2; TorchServe 0.12 drops it on /predictions)
Response (k defaults to the model-config's `topk`, and is at most the number of classes):
    {"label": "roses", "probability": 0.91,
     "top_k": [{"label": "roses", "probability": 0.91}, {"label": "tulips", "probability": 0.05}]}
    and {"predictions": [<one such object per instance>]} for the Vertex AI envelope.
"""

from typing import Any, Optional

import torch
from image_request import ImageItem, b64_bytes, decode_image, image_stats, topk_value
from model_metrics import BYTES, PIXELS, Observed
from torch import Tensor

from contract import B64, ImageEnvelopeParameters, ImageRequest, validate
from json_batch_handler import Instances, JsonBatchHandler, RequestError

FILE_FIELDS = ("data", "file", "image", "body")
# Query parameters TorchServe forwards as row keys (on /invocations and /<name>/predict).
PARAM_FIELDS = {"topk", "model_name"}
JSON_IMAGE_FIELDS = ("b64", "image", "image_bytes")


class ImageClassifierHandler(JsonBatchHandler):
    """Decodes each request's image; a batch runs as one forward over a list of images."""

    defaults = {
        **JsonBatchHandler.defaults,
        "max_body_bytes": 8 * 1024 * 1024,
        "max_pixels": 24_000_000,
        "max_instances": 16,
        "topk": 3,
        "formats": ["JPEG", "PNG", "WEBP", "GIF", "BMP"],
    }
    bodies = {
        "image/*": "read_image",
        "application/octet-stream": "read_image",
        "multipart/form-data": "read_form",
        "application/json": "read_json",
        "": "read_image",
    }

    def initialize(self, context: Any) -> None:
        """Loads the model and meta, then runs two forwards so the first request is not slow."""
        super().initialize(context)
        self.labels: list[str] = self.meta["labels"]
        # TorchScript's profiling executor optimises each path on its first calls: one photo
        # (or photos of one size, resized together) and photos of different sizes.
        photo = torch.zeros(3, 192, 256, dtype=torch.uint8, device=self.device)
        with torch.inference_mode():
            for _ in range(2):
                self.model([photo])
                self.model([photo, photo[:, :, :192]])

    def read_form(self, row: dict, idx: int) -> ImageItem:
        """Reader of multipart forms: the uploaded file's image."""
        field, data = self._form_file(row)
        return ImageItem(self._decode(data, field), nbytes=len(data))

    def read_image(self, row: dict, idx: int) -> ImageItem:
        """Reader of raw image bytes (image/*, application/octet-stream, no Content-Type)."""
        body = self.body(row)
        image = self._decode(body if body is not None else b"", "body")
        return ImageItem(image, nbytes=len(body))

    def amend(self, items: list[ImageItem], row: dict, idx: int) -> None:
        """A form field, query parameter or X-TopK header sets k where the body did not."""
        k = self._request_k(row, idx)
        for it in items:
            it.k = it.k or k

    def _request_k(self, row: dict, idx: int) -> Optional[int]:
        if row.get("topk") is not None:
            return topk_value(row["topk"], len(self.labels))
        header = self.header(idx, "X-TopK")
        return topk_value(header, len(self.labels), "X-TopK") if header is not None else None

    def parse_json(self, payload: dict[str, Any]) -> Any:
        """As the base, plus the envelope's `parameters.topk` as the instances' default k."""
        items = super().parse_json(payload)
        if isinstance(items, Instances) and "parameters" in payload:
            params = validate(payload, ImageEnvelopeParameters).parameters
            if params is not None and params.topk is not None:
                k = topk_value(params.topk, len(self.labels), "parameters.topk")
                for it in items:
                    it.k = it.k or k
        return items

    def parse(self, payload: dict[str, Any]) -> ImageItem:
        """`{"b64": ...}` (or TF Serving's `{"image_bytes": {"b64": ...}}`) and optional topk."""
        req = validate(payload, ImageRequest)
        field = next((f for f in JSON_IMAGE_FIELDS if getattr(req, f) is not None), None)
        if field is None:
            raise RequestError("b64", 'missing: send {"b64": "<base64-encoded image>"}')
        value = getattr(req, field)
        value = value.b64 if isinstance(value, B64) else value
        data = b64_bytes(value, self.config["max_body_bytes"], field)
        k = topk_value(req.topk, len(self.labels)) if req.topk is not None else None
        return ImageItem(self._decode(data, field), k, len(data))

    def _form_file(self, row: dict) -> tuple[str, bytes | bytearray]:
        """The uploaded file of a multipart form: TorchServe passes each form field as a key."""
        for name in FILE_FIELDS:
            if isinstance(row.get(name), (bytes, bytearray)):
                return name, row[name]
        others = [k for k, v in row.items() if k not in PARAM_FIELDS and v is not None]
        if len(others) != 1:
            raise RequestError(
                "data", f"expected one file field (e.g. -F data=@photo.jpg), got {sorted(others)}"
            )
        value = row[others[0]]
        if isinstance(value, str):
            value = value.encode("latin-1", "replace")
        if not isinstance(value, (bytes, bytearray)):
            raise RequestError(others[0], "is not a file upload")
        return others[0], value

    def _decode(self, data: Any, field: str) -> Tensor:
        if not isinstance(data, (bytes, bytearray)):
            raise RequestError(field, f"expected image bytes, got {type(data).__name__}")
        limit = self.config["max_body_bytes"]
        if len(data) > limit:
            raise RequestError(field, f"{len(data)} bytes exceeds {limit}", 413)
        return decode_image(
            bytes(data),
            self.config["max_pixels"],
            self.meta["decode"]["draft"],
            self.config["formats"],
            field,
        )

    def collate(self, items: list[ImageItem]) -> tuple[list[Tensor]]:
        """The images as one list: the model resizes each to its input size in one forward."""
        return ([it.image for it in items],)

    def respond(self, logits: Tensor, items: list[ImageItem]) -> list[dict[str, Any]]:
        """Softmax, then the top k classes of each image."""
        probs = torch.softmax(logits, dim=-1)  # (B, C)
        results = []
        for p, it in zip(probs, items):
            values, index = p.topk(it.k or min(self.config["topk"], len(self.labels)))
            top = [
                {"label": self.labels[int(i)], "probability": round(float(v), 6)}
                for v, i in zip(values, index)
            ]
            results.append({**top[0], "top_k": top})
        return results

    def observe(self, items: list[ImageItem], outputs: list[dict]) -> Observed:
        """Pixels as decoded and bytes as sent of each image; its label and probability."""
        return Observed(
            sizes={
                PIXELS: sum(int(it.image.size(1) * it.image.size(2)) for it in items),
                BYTES: sum(it.nbytes for it in items),
            },
            labels=[out["label"] for out in outputs],
            top1=[out["probability"] for out in outputs],
        )

    def drift_stats(self, item: ImageItem) -> dict[str, float]:
        """Payload log: brightness, contrast, colour, sharpness, size (image_request)."""
        return image_stats(item.image)

    def drift_prediction(self, item: ImageItem, result: dict[str, Any]) -> int:
        """Payload log: the predicted label's index."""
        return self.labels.index(result["label"])
