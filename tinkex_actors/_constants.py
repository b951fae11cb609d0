"""The one place for the protocol's numbers, defaults and header names.

Sources: the Tinkex seed (``shared/seed/API_REFERENCE.md``) for SDK defaults, the wire protocol
notes (``shared/protocol/TINKER_PROTOCOL.md``) for what the official SDK sends. Where the two
disagree on a limit, the value is configurable, defaults to the seed, and the server's
``client/config`` announcement wins when present.
"""

from __future__ import annotations

from typing import Final

# ------------------------------------------------------------------------------- identity
#: Reported as ``sdk_version`` to ``client/config`` and ``create_session``: the official SDK
#: release whose wire behaviour tinkex_actors reproduces.
WIRE_SDK_VERSION: Final = "0.38.0"
#: The prefix of every endpoint path (the SDK declares its endpoints in ``_endpoints.py``).
API_PREFIX: Final = "/api/v1"
DEFAULT_BASE_URL: Final = "https://tinker.thinkingmachines.dev/services/tinker-prod"
#: Static keys start with this; JWTs (``eyJ...``) are accepted as well.
API_KEY_PREFIX: Final = "tml-"
JWT_PREFIX: Final = "eyJ"

# ------------------------------------------------------------------------------- environment
ENV_API_KEY: Final = "TINKER_API_KEY"
ENV_BASE_URL: Final = "TINKER_BASE_URL"
ENV_TAGS: Final = "TINKER_TAGS"
ENV_PROJECT_ID: Final = "TINKER_PROJECT_ID"
ENV_TELEMETRY: Final = "TINKER_TELEMETRY"
ENV_CF_CLIENT_ID: Final = "CLOUDFLARE_ACCESS_CLIENT_ID"
ENV_CF_CLIENT_SECRET: Final = "CLOUDFLARE_ACCESS_CLIENT_SECRET"
#: A shell command printing a fresh credential (a ``tml-`` key or a JWT), run when one is needed.
ENV_CREDENTIAL_CMD: Final = "TINKER_CREDENTIAL_CMD"
ENV_HOME: Final = "HOME"

# ------------------------------------------------------------------------------- credentials
#: The stored key file of ``tinker auth login``, relative to the home directory (JSON:
#: ``{"version": 1, "default": name, "keys": {name: {"type", "key", "name", ...}}}``).
CREDENTIALS_FILE: Final = ".tinker/credentials.json"
CREDENTIALS_FILE_VERSION: Final = 1
#: Longest run of the credential command; its output beyond this many bytes is refused.
CREDENTIAL_CMD_TIMEOUT: Final = 60.0
CREDENTIAL_CMD_MAX_OUTPUT: Final = 64 * 1024
#: A JWT is renewed when less than this remains of its life (or half its life, when shorter).
JWT_REFRESH_MARGIN: Final = 60.0
#: After a failed renewal, the still-valid token is used this long (at most half of what
#: remains of its life) before the next attempt.
JWT_REFRESH_RETRY: Final = 60.0
#: A 401 whose WWW-Authenticate header holds this rejected the JWT itself (RFC 6750): a new
#: one is obtained and the request sent once more.
JWT_INVALID_TOKEN: Final = 'error="invalid_token"'

# ------------------------------------------------------------------------------- timeouts (s)
DEFAULT_TIMEOUT: Final = 60.0
DEFAULT_CONNECT_TIMEOUT: Final = 5.0
RETRIEVE_FUTURE_TIMEOUT: Final = 45.0
HEARTBEAT_TIMEOUT: Final = 10.0
DYNAMIC_CONFIG_TIMEOUT: Final = 10.0
TELEMETRY_TIMEOUT: Final = 5.0
#: Bound on waiting for an actor to stop during close().
ACTOR_STOP_TIMEOUT: Final = 10.0
#: Bound on close() run by the atexit hook for clients the program forgot to close.
ATEXIT_CLOSE_TIMEOUT: Final = 2.0
#: sessions/{id}/finish during close(): read timeout and transport retries (close is bounded).
SESSION_FINISH_TIMEOUT: Final = 10.0
SESSION_FINISH_RETRIES: Final = 1
#: Shortest read timeout of a retrieve_future poll cut short by a caller's deadline.
POLL_MIN_TIMEOUT: Final = 0.05

# ------------------------------------------------------------------------------- supervision
#: Restart intensity: a child crashing more than this many times within
#: SUPERVISOR_RESTART_PERIOD seconds is marked failed instead of restarted.
SUPERVISOR_MAX_RESTARTS: Final = 3
SUPERVISOR_RESTART_PERIOD: Final = 5.0
#: How long a call waits for a crashed actor's replacement before failing.
ACTOR_RESTART_WAIT: Final = 5.0
#: Idle worker threads of a tenant's pool retire after this many seconds.
WORKER_IDLE_TIMEOUT: Final = 10.0

# ------------------------------------------------------------------------------- retries
DEFAULT_MAX_RETRIES: Final = 10
RETRY_INITIAL_DELAY: Final = 0.5
RETRY_MAX_DELAY: Final = 10.0
#: Each delay is multiplied by a factor in [1 - RETRY_JITTER, 1].
RETRY_JITTER: Final = 0.25
#: retry-after(-ms) values are honoured only when 0 < value <= this.
RETRY_AFTER_MAX: Final = 60.0
#: Retryable statuses below 500. Not 409: a conflict does not go away by asking again (a
#: server that knows better says ``x-should-retry: true``).
RETRYABLE_STATUS: Final = frozenset({408, 429})
#: Statuses >= this are retryable as well.
RETRYABLE_STATUS_FLOOR: Final = 500
#: Back-off of the polling loop after connection errors and 429: min(initial * 2**n, max),
#: jittered.
POLL_BACKOFF_INITIAL: Final = 1.0
POLL_BACKOFF_MAX: Final = 30.0
#: Immediate retries of a retrieve_future answered 400 before giving up.
POLL_MAX_BAD_REQUEST_RETRIES: Final = 3

# ------------------------------------------------------------------------------- session
HEARTBEAT_INTERVAL: Final = 10.0
HEARTBEAT_WARN_AFTER: Final = 120.0
#: Queue-state warnings are logged at most this often per client.
QUEUE_STATE_LOG_INTERVAL: Final = 60.0
#: A 402 (billing) answer to retrieve_future is waited out this long between polls, for at
#: most client/config's billing_exception_max_pause_duration_sec.
POLL_BILLING_DELAY: Final = 5.0
#: Consecutive 5xx answers to retrieve_future re-polled at once before backing off.
POLL_IMMEDIATE_5XX: Final = 2

# ------------------------------------------------------------------------------- recovery
#: RecoveryPolicy defaults: tries per recovery step, the back-off between tries (doubling,
#: capped) and the longest wait for a restored model to be ready (seconds).
RECOVERY_MAX_ATTEMPTS: Final = 3
RECOVERY_BACKOFF: Final = 1.0
RECOVERY_MAX_BACKOFF: Final = 30.0
RECOVERY_RESTORE_TIMEOUT: Final = 300.0
#: How long a client being created waits for a session the server said is gone to be
#: replaced (then it is created in the new one) before its creation fails.
SESSION_REPLACE_WAIT: Final = 60.0
#: Times one sample is submitted again after the server forgot it (its request id or its
#: sampling session) before it fails.
SAMPLE_MAX_RESUBMITS: Final = 5
#: How long a sample that met a lost sampling session waits for the session to be re-created
#: before it fails (unless its own timeout is shorter).
SAMPLE_REBIND_WAIT: Final = 120.0

# ------------------------------------------------------------------------------- training
DEFAULT_LORA_RANK: Final = 32
#: Seed defaults for forward_backward chunking (the server's client/config values win).
CHUNK_MAX_DATUMS: Final = 128
CHUNK_MAX_TOKENS: Final = 500_000
#: Estimated proto bytes of a forward_backward datum (protocol §5.4): per text token, per CSR
#: index; dense tensors count their packed size, images their raw bytes.
FWDBWD_BYTES_PER_TOKEN: Final = 4
FWDBWD_SPARSE_INDEX_BYTES: Final = 8
#: AdamParams defaults (protocol §3.4); weight_decay and grad_clip_norm default to 0 (off).
ADAM_LEARNING_RATE: Final = 1e-4
ADAM_BETA1: Final = 0.9
ADAM_BETA2: Final = 0.95
ADAM_EPS: Final = 1e-12
#: The one version of the Dimuon optimizer family (protocol §4.7, ``OptimizerConfig``).
DIMUON_VERSION: Final = 1
#: Default dtype of a loss_fn_inputs key given as a plain list.
LOSS_INPUT_DTYPES: Final = {
    "target_tokens": "int64",
    "weights": "float32",
    "advantages": "float32",
    "logprobs": "float32",
    "clip_low_threshold": "float32",
    "clip_high_threshold": "float32",
    "sequence_ratio_mask": "float32",
}
#: LoRA scaling numerator of the embedded server's adapters: output += (alpha / rank) * B @ A x.
LORA_ALPHA: Final = 32

#: The scheme of checkpoint paths (``tinker://<run>/<kind>/<name>``).
TINKER_SCHEME: Final = "tinker://"

# ------------------------------------------------------------------------------- sampling
#: Samples in flight per sampling client (submitted, result not yet in); the server's
#: ``sample_max_concurrent_requests`` lowers it. Costs no thread: see docs/architecture.md.
SAMPLE_MAX_INFLIGHT: Final = 2000
#: asample POSTs at once per API key while the throttle window after a 429 is open.
SAMPLE_MAX_INFLIGHT_THROTTLED: Final = 10
#: Threads per tenant that POST samples and fetch their results (no thread waits out a
#: sample's latency). Measured (2 cores, 2,000 samples at 2 s behind a 10 ms hop): 16 submit
#: as fast as 32 (the work is CPU-bound) without slowing a training step issued meanwhile
#: (40 ms against 37 ms idle; 70-95 ms with 32 threads).
SAMPLE_DISPATCH_THREADS: Final = 16
#: Threads per tenant for single retrieve_future long polls of samples, used only with
#: servers that do not announce batched polling (sample_use_retrieve_futures).
POLL_THREADS: Final = 256
#: Read timeout of an acknowledgement-only retrieve_futures poll (timeout 0).
RETRIEVE_FUTURES_ACK_TIMEOUT: Final = 5.0
#: Worker threads of the tenant's general pool (telemetry uploads, capability lookups).
TENANT_POOL_WORKERS: Final = 4
#: After a 429 back-off ends, the throttled limit stays on this long.
SAMPLE_THROTTLE_WINDOW: Final = 10.0
SAMPLE_BACKOFF: Final = 1.0
SAMPLE_BACKOFF_LARGE: Final = 5.0
SAMPLE_LARGE_PROMPT_BYTES: Final = 128 * 1024
#: Estimated bytes per text token when sizing a prompt.
SAMPLE_BYTES_PER_TOKEN: Final = 10
#: seq_id stride between clones of one sampling client.
SAMPLE_SEQ_ID_STRIDE: Final = 1_000_000_000
#: A restored sampling client (from a handle or a pickle) draws its clone id from
#: 1..SAMPLE_CLONE_ID_MAX when the server does not assign one (join_sampling_session).
SAMPLE_CLONE_ID_MAX: Final = 1_000_000_000
#: Sentinel cell padding top-k logprob matrices.
TOPK_SENTINEL_TOKEN: Final = 0
TOPK_SENTINEL_LOGPROB: Final = -99999.0
#: SamplingParams defaults (protocol §4.6); top_k -1 means no limit.
SAMPLING_TEMPERATURE: Final = 1.0
SAMPLING_TOP_K: Final = -1
SAMPLING_TOP_P: Final = 1.0

# ------------------------------------------------------------------------------- client/config
#: What the official SDK assumes when client/config leaves a flag out (protocol §3.1).
#: fwdbwd_max_chunk_len / fwdbwd_max_chunk_bytes_count have no default here: when the server
#: does not announce them, chunking uses CHUNK_MAX_DATUMS / CHUNK_MAX_TOKENS.
CONFIG_SAMPLE_DISPATCH_BYTES: Final = 10 * 1024 * 1024
CONFIG_INFLIGHT_RESPONSE_BYTES: Final = 50 * 1024 * 1024
CONFIG_FWDBWD_DISPATCH_BYTES: Final = 50_000_000
CONFIG_BILLING_MAX_PAUSE: Final = 3600
CONFIG_SAMPLE_MAX_CONCURRENT: Final = 2000
CONFIG_REFRESH_INTERVAL: Final = 300
CONFIG_SAMPLE_CANCEL_BATCH: Final = 64

# ------------------------------------------------------------------------------- headers
HEADER_API_KEY: Final = "X-API-Key"
HEADER_IDEMPOTENCY_KEY: Final = "X-Idempotency-Key"
HEADER_RETRY_COUNT: Final = "x-stainless-retry-count"
HEADER_READ_TIMEOUT: Final = "x-stainless-read-timeout"
HEADER_REQUEST_TYPE: Final = "X-Tinker-Request-Type"
HEADER_REQUEST_ITERATION: Final = "X-Tinker-Request-Iteration"
HEADER_PROMISE_ROUNDTRIP: Final = "X-Tinker-Create-Promise-Roundtrip-Time"
HEADER_SAMPLING_BACKPRESSURE: Final = "X-Tinker-Sampling-Backpressure"
HEADER_CF_CLIENT_ID: Final = "CF-Access-Client-Id"
HEADER_CF_CLIENT_SECRET: Final = "CF-Access-Client-Secret"
HEADER_SHOULD_RETRY: Final = "x-should-retry"
HEADER_RETRY_AFTER: Final = "retry-after"
HEADER_RETRY_AFTER_MS: Final = "retry-after-ms"
#: A server announcing deprecation: logged once per note (ERROR when the level is "error").
HEADER_DEPRECATION_NOTE: Final = "x-deprecation-note"
HEADER_DEPRECATION_LEVEL: Final = "x-deprecation-level"
HEADER_WWW_AUTHENTICATE: Final = "www-authenticate"
CONTENT_JSON: Final = "application/json"
CONTENT_PROTOBUF: Final = "application/x-protobuf"
#: Prefix of idempotency keys; one key per call, reused across that call's retries.
IDEMPOTENCY_KEY_PREFIX: Final = "tinkex-retry-"
#: User-Agent is ``<this>/<version>``.
USER_AGENT_PRODUCT: Final = "tinkex_actors"

# ------------------------------------------------------------------------------- HTTP transport
#: Keep-alive connections kept per origin and tenant; more concurrent requests open extra
#: connections that are closed after use. Opened lazily, so a large value costs nothing idle.
HTTP_POOL_SIZE: Final = 64
#: Whether a request waits for a pooled connection when all are busy (False: it opens an
#: extra connection, closed after use).
HTTP_POOL_BLOCK: Final = False
#: Largest answer body read into memory (streamed downloads are not bounded): far above any
#: real result (a forward_backward of 1,024 sequences x 32k tokens is ~130 MB of logprobs).
HTTP_MAX_RESPONSE_BYTES: Final = 1024 * 1024 * 1024
#: Same-origin redirects followed per request (a redirect to another origin is never
#: followed with the API key).
HTTP_MAX_REDIRECTS: Final = 5
#: Bytes per chunk yielded by streaming downloads.
HTTP_STREAM_CHUNK_SIZE: Final = 1024 * 1024

# ------------------------------------------------------------------------------- REST client
#: Default page sizes of the REST listings (protocol §3.8).
REST_SESSIONS_PAGE: Final = 20
REST_TRAINING_RUNS_PAGE: Final = 20
REST_CHECKPOINTS_PAGE: Final = 100
#: Worker threads of a RestClient's own pool (its ``*_async`` calls).
REST_POOL_WORKERS: Final = 4
#: An archive URL answered 503 ("still being generated") is asked again after this wait
#: (a shorter ``retry-after``/``retry-after-ms`` from the server wins), at most this many times.
ARCHIVE_RETRY_DELAY: Final = 30.0
ARCHIVE_MAX_ATTEMPTS: Final = 6
#: Lifetime assumed for a 302 archive redirect without an ``Expires`` header.
ARCHIVE_URL_ASSUMED_TTL: Final = 15 * 60
#: Prefix of the temporary files and directories of a checkpoint download (next to the output).
DOWNLOAD_TMP_PREFIX: Final = ".tinkex-download-"

# ------------------------------------------------------------------------------- tokenizers
#: Model names starting with this use the published Llama-3 tokenizer (Tinkex's mapping).
LLAMA3_MODEL_PREFIX: Final = "meta-llama/Llama-3"
LLAMA3_TOKENIZER_ID: Final = "thinkingmachineslabinc/meta-llama-3-tokenizer"
#: Set (to 1/true/yes/on) to never ask the Hugging Face hub over the network.
ENV_HF_HUB_OFFLINE: Final = "HF_HUB_OFFLINE"
#: Longest wait for another thread that is loading the same tokenizer (a hub download).
TOKENIZER_LOAD_WAIT: Final = 300.0

# ------------------------------------------------------------------------------- embedded server
#: The model the embedded server serves by default (torch: built locally; null: simulated).
SERVER_DEFAULT_MODEL: Final = "tinkex/tiny-llama"
SERVER_DEFAULT_HOST: Final = "127.0.0.1"
SERVER_DEFAULT_PORT: Final = 8000
#: retrieve_future holds a pending future this long, then answers try_again; must stay below
#: the client's RETRIEVE_FUTURE_TIMEOUT.
SERVER_POLL_HOLD: Final = 25.0
SERVER_MAX_BODY_BYTES: Final = 64 * 1024 * 1024
#: A zstd body may expand to at most this many times the body limit.
SERVER_MAX_DECOMPRESSION_RATIO: Final = 16
#: A missing seq_id holds its model's later requests at most this long.
SERVER_SEQ_GAP_TIMEOUT: Final = 30.0
#: Worker threads running engine calls.
SERVER_WORKERS: Final = 16
#: Completed futures (and idempotency records) are kept this long for re-retrieval.
SERVER_FUTURE_TTL: Final = 3600.0
#: How long a future stays retrievable once its result was sent (a client whose answer was
#: lost on the way polls again within seconds); bounds the server's memory under load.
SERVER_DELIVERED_FUTURE_TTL: Final = 60.0
SERVER_IDEMPOTENCY_MAX: Final = 100_000
#: Signed archive URLs live this long by default (the 0.25 SDK assumes 15 minutes).
SERVER_ARCHIVE_URL_TTL: Final = 900
#: Checkpoint TTL bounds (protocol §3.5: one hour to ten years).
CHECKPOINT_TTL_MIN: Final = 3600
CHECKPOINT_TTL_MAX: Final = 10 * 365 * 24 * 3600
#: How often expired checkpoints and futures are swept.
SERVER_EXPIRY_SWEEP_INTERVAL: Final = 15.0
#: On SIGTERM, in-flight HTTP requests get this long to finish.
SERVER_GRACEFUL_SHUTDOWN: Final = 10.0
#: EmbeddedServer: longest wait for /healthz after spawning the subprocess.
EMBEDDED_READY_TIMEOUT: Final = 120.0
#: EmbeddedServer: after SIGTERM, wait this long before SIGKILL (above the graceful shutdown).
EMBEDDED_STOP_TIMEOUT: Final = 20.0
#: EmbeddedServer: interval between start-up checks (port file, healthz).
EMBEDDED_POLL_INTERVAL: Final = 0.05
#: Vocabulary and context of the null engine's simulated model (those of the torch engine's tiny
#: default model, so the same requests are valid on both).
NULL_ENGINE_VOCAB_SIZE: Final = 2048
NULL_ENGINE_CONTEXT_LENGTH: Final = 512
