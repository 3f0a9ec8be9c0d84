"""Service configuration: one pydantic model, read from the environment once per process."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from typing_extensions import Annotated

from core.project_settings import ProjectSettings


class Settings(BaseSettings):
    """Everything the backend, the worker and the CLI read from the environment (names as in label_studio_ml)."""

    model_config = SettingsConfigDict(extra="ignore", env_nested_delimiter="__", populate_by_name=True)

    label_studio_url: str = Field(
        "http://localhost:8080", validation_alias=AliasChoices("LABEL_STUDIO_URL", "LABEL_STUDIO_HOST"),
        description="where the backend and the worker reach Label Studio")
    label_studio_api_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("LABEL_STUDIO_API_KEY", "LABEL_STUDIO_ACCESS_TOKEN"),
        description="Label Studio API token (legacy token or personal access token)")
    redis_url: str = Field("redis://localhost:6379/0", validation_alias=AliasChoices("REDIS_URL", "LSAL_REDIS_URL"))
    secret: SecretStr | None = Field(
        None, validation_alias="LSAL_SECRET",
        description="shared secret required by /webhook and /admin (header X-LSAL-Secret or Bearer)")
    basic_auth_user: str | None = Field(None, validation_alias="BASIC_AUTH_USER")
    basic_auth_pass: SecretStr | None = Field(None, validation_alias="BASIC_AUTH_PASS")
    model_dir: Path = Field(Path("lsal-data/models"), validation_alias=AliasChoices("MODEL_DIR", "LSAL_MODEL_DIR"),
                            description="model artifacts: <model_dir>/project-<id>/<version>.pt")
    artifact_store: str | None = Field(
        None, validation_alias="LSAL_ARTIFACT_STORE",
        description="rescoring shards: a directory shared by the workers, or s3://bucket/prefix (default MODEL_DIR)")
    s3_endpoint_url: str | None = Field(None, validation_alias="LSAL_S3_ENDPOINT_URL",
                                        description="S3-compatible endpoint (MinIO, ...) for an s3:// store")
    score_queue: str | None = Field(None, validation_alias="LSAL_SCORE_QUEUE",
                                    description="queue of rescoring shard jobs (default: LSAL_QUEUE)")
    public_url: str | None = Field(
        None, validation_alias="LSAL_PUBLIC_URL",
        description="URL at which Label Studio reaches this backend, for the webhooks the worker registers; "
                    "default: the ML backend URL the project's Label Studio admin connected (never a request's "
                    "Host header)")
    model_class: str = Field(
        "backend.model_api:ActiveLearningModel", validation_alias="LSAL_MODEL_CLASS",
        description="the LabelStudioModel subclass answering /predict and /webhook (label_studio_ml's shape)")
    queue: str = Field("lsal", validation_alias="LSAL_QUEUE", description="RQ queue the jobs go to")
    image_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias="LSAL_IMAGE_HOSTS",
        description="comma-separated host[:port] allowed for task image URLs besides Label Studio's own")
    image_max_bytes: int = Field(20 * 2**20, gt=0, validation_alias="LSAL_IMAGE_MAX_BYTES")
    image_timeout_s: float = Field(10.0, gt=0, validation_alias="LSAL_IMAGE_TIMEOUT_S",
                                   description="deadline of one image download, from connecting to the last byte")
    image_max_pixels: int = Field(40_000_000, gt=0, validation_alias="LSAL_IMAGE_MAX_PIXELS",
                                  description="an image with more pixels (read from its header) is skipped")
    request_max_pixels: int = Field(
        160_000_000, gt=0, validation_alias="LSAL_REQUEST_MAX_PIXELS",
        description="pixels one /predict request (or one job's batch) may decode; later images are skipped")
    image_threads: int = Field(8, ge=1, le=64, validation_alias="LSAL_IMAGE_THREADS",
                               description="concurrent downloads of one request (or one job)")
    max_body_bytes: int = Field(32 * 2**20, gt=0, validation_alias="LSAL_MAX_BODY_BYTES")
    body_timeout_s: float = Field(30.0, gt=0, validation_alias="LSAL_BODY_TIMEOUT_S",
                                  description="a request body not received completely within this is refused (408)")
    max_json_depth: int = Field(64, ge=4, le=1000, validation_alias="LSAL_MAX_JSON_DEPTH",
                                description="JSON bodies nested deeper are refused (400)")
    max_predict_tasks: int = Field(1000, ge=1, le=1_000_000, validation_alias="LSAL_MAX_PREDICT_TASKS",
                                   description="tasks one /predict request may carry (413 beyond)")
    max_config_bytes: int = Field(512 * 1024, ge=1024, validation_alias="LSAL_MAX_CONFIG_BYTES",
                                  description="largest labeling config /setup and /predict parse")
    setup_checks_per_s: float = Field(
        5.0, gt=0, validation_alias="LSAL_SETUP_CHECKS_PER_S",
        description="/setup calls per second that may ask Label Studio to confirm a project (429 beyond)")
    redis_timeout_s: float = Field(
        0.5, gt=0, le=30, validation_alias="LSAL_REDIS_TIMEOUT_S",
        description="the backend's Redis socket timeout: a stuck Redis answers 503 before Label Studio's 1 s "
                    "webhook timeout")
    weights_dir: Path | None = Field(
        None, validation_alias="LSAL_WEIGHTS_DIR",
        description="the only directory a project's pretrained_path may name files in (unset: none)")
    max_connections: int = Field(1000, ge=1, validation_alias="LSAL_MAX_CONNECTIONS",
                                 description="concurrent connections `lsal serve` accepts (503 beyond)")
    head_timeout_s: float = Field(10.0, gt=0, validation_alias="LSAL_HEAD_TIMEOUT_S",
                                  description="a connection whose request head is not complete within this closes")
    keep_alive_s: float = Field(5.0, gt=0, validation_alias="LSAL_KEEP_ALIVE_S",
                                description="idle keep-alive connections are closed after this long")
    reconcile_s: float = Field(300.0, ge=0, validation_alias="LSAL_RECONCILE_S",
                               description="compare Label Studio's counts with the trained ones this often (0: never)")
    lock_lease_s: float = Field(30.0, ge=1, validation_alias="LSAL_LOCK_LEASE_S",
                                description="a job's project lock lapses this long after its worker died")
    job_timeout_s: int = Field(3600, gt=0, validation_alias="LSAL_JOB_TIMEOUT_S")
    defaults: ProjectSettings = Field(
        default_factory=ProjectSettings, validation_alias="LSAL_DEFAULTS",
        description="settings of a project nobody configured; JSON, or LSAL_DEFAULTS__RETRAIN_EVERY=5 style")

    @field_validator("image_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            return [h.strip().lower() for h in value.split(",") if h.strip()]
        return value

    @field_validator("label_studio_url", "public_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("http://", "https://")) or any(c in value for c in "\t\r\n "):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value.rstrip("/")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read from the environment on first use."""
    return Settings()
