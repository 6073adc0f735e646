"""The HTTP service of `automodel serve`: FastAPI over the run's ONNX export, with batching.

    app = create_app(served, estimate, ServeConfig(...))   # one process
    app = app_from_env()                                    # each uvicorn worker with --workers N

    POST /predict   one or more images (multipart file fields, or one raw body) -> label, confidence, top-k
    GET  /health    200 while the model answers
    GET  /info      classes, input size and preprocessing, the run's scores, the measured latency and memory
    GET  /docs      the OpenAPI page (with an example request); /openapi.json

The model is servemodel.ServedModel (onnxruntime, preprocessing in numpy);
concurrent requests share model calls through batcher.Batcher. Every refused
request gets a 4xx with {"error": ...}; nothing a client sends gives a 500.
"""

from __future__ import annotations

import json
import os
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, AsyncIterator

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException, MultiPartParser

from automodel.outputs.batcher import Batcher
from automodel.outputs.servemodel import (
    BadImage,
    Estimate,
    ServedModel,
    limit_decoding,
    load_served,
    rss_mb,
    softmax,
)
from automodel.resources import template_environment

ENV = "AUTOMODEL_SERVE"   # JSON handed to --workers processes: {"config": ..., "estimate": ...}


@dataclass(frozen=True)
class ServeConfig:
    run: str                       # the run folder served
    host: str = "127.0.0.1"
    port: int = 8000
    threads: int = 0               # onnxruntime threads per process (0: all cores / workers)
    max_upload_mb: float = 20.0    # per uploaded file
    max_pixels: int = 60_000_000   # per image, read from its header before any decoding (a 48 MP photo fits)
    max_images: int = 64           # per request
    max_batch: int = 32            # images per model call
    max_delay_ms: float = 5.0      # how long the first request of a batch waits for others to join
    top_k: int = 3                 # default of ?top_k


class Ranked(BaseModel):
    label: str
    confidence: float


class Prediction(BaseModel):
    file: str = Field(description="the upload's file name (or field name; 'body' for a raw body)")
    label: str
    confidence: float = Field(description="softmax probability of the label")
    top_k: list[Ranked]


class PredictResponse(BaseModel):
    predictions: list[Prediction]
    iteration: int = Field(description="the run's iteration whose model answered")


class ErrorResponse(BaseModel):
    error: str
    file: str | None = None


_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {"type": "object", "properties": {
                    "file": {"type": "array", "items": {"type": "string", "format": "binary"},
                             "description": "one or more images (PNG, JPEG, BMP, GIF, WebP, TIFF); any field name"}}},
            },
            "image/*": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


def _problem(status: int, message: str, file: str | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "file": file}, status_code=status)


class _TooLarge(Exception):
    pass


async def _capped(request: Request, cap: int) -> AsyncIterator[bytes]:
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > cap:
            raise _TooLarge()
        yield chunk


async def read_uploads(request: Request, cfg: ServeConfig) -> list[tuple[str, bytes]]:
    """(name, bytes) of every uploaded file; BadImage (a 4xx) for an empty, malformed or oversized request."""
    per_file = int(cfg.max_upload_mb * 2**20)
    cap = per_file * cfg.max_images + 2**20
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > cap:
        raise BadImage(413, f"the request is {int(length):,} bytes, more than {cfg.max_images} uploads of "
                            f"{cfg.max_upload_mb:g} MB (--max-images, --max-upload-mb)")
    try:
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            parser = MultiPartParser(request.headers, _capped(request, cap), max_files=cfg.max_images,
                                     max_fields=cfg.max_images)
            form = await parser.parse()
            uploads = []
            for key, value in form.multi_items():
                if isinstance(value, UploadFile):
                    uploads.append((value.filename or key, await value.read(per_file + 1)))
                    await value.close()
            if not uploads:
                raise BadImage(400, "the form holds no file: send images as file fields, e.g. "
                                    "`curl -F file=@image.png URL/predict`")
        else:
            body = b"".join([chunk async for chunk in _capped(request, cap)])
            if not body:
                raise BadImage(400, "the request body is empty: send images as multipart file fields "
                                    "(`curl -F file=@image.png URL/predict`) or one image as the body")
            uploads = [("body", body)]
    except MultiPartException as err:
        raise BadImage(400, f"malformed multipart form: {err.message}") from None
    except _TooLarge:
        raise BadImage(413, f"the request is larger than {cfg.max_images} uploads of {cfg.max_upload_mb:g} MB "
                            f"(--max-images, --max-upload-mb)") from None
    for name, data in uploads:
        if len(data) > per_file:
            raise BadImage(413, f"{name} is larger than {cfg.max_upload_mb:g} MB (--max-upload-mb)")
    return uploads


def _description(served: ServedModel, cfg: ServeConfig) -> str:
    env = template_environment("serve", autoescape=False)  # Markdown, not HTML
    h, w = served.pre.working_size

    def score(v: Any) -> str:
        return "n/a" if v is None else f"{v:.4f}"

    return env.get_template("description.md.j2").render(
        run=Path(served.run).name, iteration=served.iteration, classes=served.classes,
        val_accuracy=score(served.scores.get("val_accuracy")), test_accuracy=score(served.scores.get("test_accuracy")),
        host=f"{cfg.host}:{cfg.port}", width=w, height=h, channels=served.pre.channels, max_batch=cfg.max_batch,
        max_delay_ms=f"{cfg.max_delay_ms:g}", max_upload_mb=f"{cfg.max_upload_mb:g}", max_pixels=f"{cfg.max_pixels:,}",
        max_images=cfg.max_images)


def create_app(served: ServedModel, estimate: Estimate, cfg: ServeConfig) -> FastAPI:
    limit_decoding(cfg.max_pixels)
    batcher = Batcher(served.logits, cfg.max_batch, cfg.max_delay_ms / 1000.0)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title=f"automodel: {Path(served.run).name}", version=str(served.iteration),
                  description=_description(served, cfg), lifespan=lifespan)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        return _problem(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        parts = [f"{'.'.join(str(x) for x in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()]
        return _problem(400, "; ".join(parts) or "invalid request")

    @app.get("/health", summary="200 while the model answers")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "iteration": served.iteration}

    @app.get("/info", summary="classes, preprocessing, the run's scores, measured latency and memory")
    async def info() -> dict[str, Any]:
        h, w = served.pre.working_size
        return {
            "run": str(served.run),
            "iteration": served.iteration,
            "classes": served.classes,
            "input": {"decoded_size": {"height": h, "width": w}, "channels": served.pre.channels,
                      "model_input": served.spec.get("input"), "preprocessing": served.spec},
            "scores": served.scores,
            "estimate": estimate.to_json(),
            "memory": {"rss_mb": rss_mb(), "pid": os.getpid(), "rss_mb_at_start": estimate.rss_mb},
            "batching": {"max_batch": cfg.max_batch, "max_delay_ms": cfg.max_delay_ms, **batcher.stats.to_json()},
            "limits": {"max_upload_mb": cfg.max_upload_mb, "max_pixels": cfg.max_pixels,
                       "max_images": cfg.max_images},
        }

    @app.post(
        "/predict",
        response_model=PredictResponse,
        summary="classify one or more images",
        responses={400: {"model": ErrorResponse}, 413: {"model": ErrorResponse}, 415: {"model": ErrorResponse}},
        openapi_extra=_UPLOAD_BODY,
    )
    async def predict(
        request: Request, top_k: int = Query(cfg.top_k, ge=1, description="how many ranked classes per image")
    ):
        with batcher.arriving():
            try:
                uploads = await read_uploads(request, cfg)
            except BadImage as bad:
                return _problem(bad.status, str(bad))
            images = []
            for name, data in uploads:
                try:
                    images.append(await run_in_threadpool(served.decode, data, cfg.max_pixels))
                except BadImage as bad:
                    return _problem(bad.status, f"{name}: {bad}", name)
            x = await run_in_threadpool(served.inputs, np.stack(images))
        probs = softmax(await batcher.submit(x))
        k = min(top_k, len(served.classes))
        order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        preds = []
        for (name, _), row, ranked in zip(uploads, probs, order):
            top = [{"label": served.classes[j], "confidence": float(row[j])} for j in ranked]
            preds.append({"file": name, "label": top[0]["label"], "confidence": top[0]["confidence"], "top_k": top})
        return {"predictions": preds, "iteration": served.iteration}

    return app


def worker_env(cfg: ServeConfig, estimate: Estimate) -> str:
    return json.dumps({"config": asdict(cfg), "estimate": estimate.to_json()})


def app_from_env() -> FastAPI:
    """The app of one `--workers` process: the run and settings come from $AUTOMODEL_SERVE."""
    from automodel.outputs.servemodel import BatchTiming

    data = json.loads(os.environ[ENV])
    cfg = ServeConfig(**data["config"])
    est = data["estimate"]
    estimate = Estimate(tuple(BatchTiming(**t) for t in est["batches"]), est["rss_mb"], est["threads"],
                        est["runtime"])
    return create_app(load_served(Path(cfg.run), cfg.threads), estimate, cfg)
