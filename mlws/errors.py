"""One error hierarchy for mlws.

Every error a user can cause is an :class:`MlwsError`; its message says what was expected, what
was found and how to fix it, in one line. The CLI prints it as ``Error: <message>`` and exits 1;
anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations


class MlwsError(Exception):
    """Base class of every error mlws raises on purpose."""


class UserErrorException(MlwsError, ValueError):
    """Bad input from the caller (Azure ML v1's name for it)."""


class InvalidName(UserErrorException):
    """A name (experiment, tag, ...) does not follow the naming rules."""


class WorkspaceNotFound(MlwsError):
    """No workspace at the given path, and none could be discovered."""


class WorkspaceExists(MlwsError):
    """``Workspace.create`` on a path that already holds a workspace."""


class InvalidWorkspace(MlwsError):
    """The path exists but is not a usable workspace (a file, a foreign folder, a newer schema)."""


class ExperimentNotFound(MlwsError):
    """No experiment of that name."""


class RunNotFound(MlwsError):
    """No run with that id."""


class RunExists(UserErrorException):
    """A run id given for a new run is taken already."""


class RunStateError(MlwsError):
    """The run is in a state that does not allow the operation (e.g. logging to a finished run)."""


class PropertyConflict(UserErrorException):
    """Properties are add-only: a key already set cannot take another value."""


class RegistrationConflict(UserErrorException):
    """A registration id already names a registration of something else."""


class ActivityFailedException(MlwsError):
    """A run waited on ended ``Failed`` (v1 raises this from ``wait_for_completion``)."""


class BlobNotFound(MlwsError):
    """A blob named by a manifest or run file is missing from the blob store."""


class BlobCorrupted(MlwsError):
    """A blob's bytes no longer hash to its name."""


class UnsafePath(UserErrorException):
    """A manifest or file path that is absolute, contains ``..`` or would escape its folder."""


class SnapshotError(UserErrorException):
    """The source directory cannot be snapshotted (missing, not a folder, unreadable)."""


class RunConfigError(UserErrorException):
    """A run configuration that cannot run: missing script, script outside the source folder, ..."""


class ComputeTargetException(MlwsError):
    """A compute target is missing or unusable (v1 scripts catch this name)."""


class ModelNotFound(MlwsError):
    """No registered model of that name (and version)."""


class ModelInUse(MlwsError):
    """The model is used by a live service and cannot be deleted."""


class WebserviceException(MlwsError):
    """A service cannot be deployed, found or used (v1's name)."""


class ScoringInputError(UserErrorException):
    """A scoring request whose payload a built-in scorer (an MLflow model's, see
    :mod:`mlws.serving.pyfunc`) cannot score: the service answers 400 with the message."""


class DatastoreNotFound(MlwsError):
    """No datastore of that name in the workspace."""


class ExtraNotInstalled(MlwsError):
    """An optional extra the call needs is missing; the message names it (``pip install 'mlws[tabular]'``)."""


class LockTimeout(MlwsError):
    """Another process (a gc, a snapshot) held a workspace lock for longer than we wait."""


class DatastoreUnavailable(MlwsError):
    """An ``ssh`` datastore's host cannot be reached, or its folder cannot be used."""


class WorkspaceReadOnly(MlwsError):
    """The workspace folder (or its catalog) cannot be written here: reads work, writes don't."""


class WriterLeaseHeld(WorkspaceReadOnly):
    """A workspace in a shared folder is being written by another machine (see :mod:`mlws.lease`)."""


class LeaseLost(WorkspaceReadOnly):
    """Another machine took over writing to a shared workspace while this one was silent."""


class CatalogDamaged(InvalidWorkspace):
    """``mlws.db`` is not a sound SQLite catalog (truncated, overwritten, not a file)."""


class CatalogMissing(InvalidWorkspace):
    """``mlws.json`` is there but ``mlws.db`` is missing or empty: the catalog was lost."""


class CatalogBusy(MlwsError):
    """A read on a network folder kept meeting another machine's commits half-way."""


class ProcessNotOurs(MlwsError):
    """A process recorded in this workspace's catalog runs, but for another workspace folder
    (this one is a copy of it): mlws never signals it from here."""


class DatasetNotFound(MlwsError):
    """No registered dataset of that name (and version)."""


class SecretNotFound(MlwsError):
    """No secret of that name in the workspace key vault."""


class KeyvaultKeyError(MlwsError):
    """The key that encrypts this workspace's secrets is missing or is not the right one."""


class EnvironmentBuildError(MlwsError):
    """Building a managed environment failed (pip's error is in the message and the log)."""


class EnvironmentNotFound(MlwsError):
    """No registered environment of that name (and version)."""


class EnvironmentBuildCanceled(MlwsError):
    """A managed environment's build was stopped because its run was canceled; nothing of it
    is kept."""


class V1LayerError(MlwsError):
    """mlws's azureml layer cannot be turned on or off here (a real azureml-core is installed,
    the site-packages folder is missing or not writable)."""


class Unauthorized(MlwsError):
    """A request to ``mlws serve`` with no token, an unknown one or a revoked one (HTTP 401)."""


class Forbidden(MlwsError):
    """A request whose token's role does not allow it, e.g. a reader writing (HTTP 403)."""


class TokenNotFound(MlwsError):
    """No server token (user) of that name."""


class RequestTooLarge(UserErrorException):
    """A request body larger than the server's configured limit (HTTP 413)."""


class ServerError(MlwsError):
    """``mlws serve`` cannot start or stop as asked: a non-loopback address without TLS or
    ``--insecure``, a missing certificate, a server already running, none to stop."""


# v1 exception names with no mlws counterpart (``azureml.exceptions``): never raised by mlws,
# they exist so that v1 code's ``except`` clauses name something and catch nothing else.
class AuthenticationException(MlwsError):
    """v1's login failure; mlws has nothing to log in to."""


class ServiceException(MlwsError):
    """v1's error answer from an Azure service; mlws talks to none."""


class SweepConfigError(UserErrorException):
    """A HyperDrive sweep that cannot run as configured: an unknown or malformed parameter
    expression, a grid over a continuous range, a limit out of range, a policy the sampling does
    not allow. Raised before anything is recorded."""


class PipelineValidationError(UserErrorException):
    """A pipeline that cannot run as defined: a cycle, an input no step produces, an unknown
    compute target, a parameter the pipeline does not have, two steps of one name. Raised
    before anything is recorded."""


class PipelineNotFound(MlwsError):
    """No published pipeline, pipeline endpoint or endpoint version of that id or name."""


class PipelineDisabled(MlwsError):
    """A published pipeline or pipeline endpoint that is disabled refuses to be submitted
    (enable it first)."""


class ScheduleError(UserErrorException):
    """A schedule that cannot be created or updated as given: an invalid recurrence, no (or two)
    pipelines to run, a datastore path that does not exist. Raised before anything is recorded."""


class ScheduleNotFound(MlwsError):
    """No schedule of that id."""


class ParallelRunConfigError(PipelineValidationError):
    """A ``ParallelRunConfig`` or ``ParallelRunStep`` that cannot run as given: a missing entry
    script, a bad ``mini_batch_size``, ``error_threshold`` or ``output_action``, an input that is
    not a dataset, a compute target whose type has no ParallelRunStep workers. Raised before
    anything is recorded."""


class NotAvailableRemotely(MlwsError):
    """An operation that is not ported to a remote workspace (``Workspace("https://...")``) yet;
    it runs on the server's machine, against the workspace folder."""


class ServerUnreachable(MlwsError):
    """A remote workspace's server did not answer (connection refused, reset, timed out, 503)
    within the client's retries."""


class SpoolFull(MlwsError):
    """The on-disk buffer of a remote workspace's client (writes made while its server was
    away) reached its bound (``MLWS_SPOOL_MB``); nothing more is accepted until it drains."""


class DockerError(MlwsError):
    """A run asked for Docker and the container could not be made: building the environment's
    ``base_dockerfile`` failed (docker's last line says why)."""
