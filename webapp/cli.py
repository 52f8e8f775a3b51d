"""The ``hemaloop`` command: set up, import, train and run."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import click

from models.feature_sources import DEFAULT_FEATURE_SOURCES, FEATURE_SOURCES
from models import Role, TrainingRound
from models.db import session_scope
from models.settings import Settings, SettingsError, load_settings

DEMO_DIR = Path(__file__).resolve().parent / "demo" / "pbc"
DEMO_PROJECT = "demo"


def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        raise click.ClickException(f"configuration error: {exc}") from None


def _fail(message: str) -> None:
    raise click.ClickException(message)


@click.group()
def main() -> None:
    """hemaloop: label white-blood-cell images, retrain, re-rank."""


@main.command()
def migrate() -> None:
    """Create or upgrade the database schema (Alembic upgrade head)."""
    from migrations.runner import current_revision, head_revision, upgrade

    settings = _settings()
    settings.instance_dir.mkdir(parents=True, exist_ok=True)
    head = head_revision()
    before = current_revision(settings.database_url)
    if before == head:
        click.echo(f"database already at the latest schema ({head}); nothing to do")
        return
    upgrade(settings.database_url)
    if before is None:
        click.echo(f"created the database schema (revision {head})")
    else:
        click.echo(f"upgraded the database schema from revision {before} to {head}")


@main.command("create-user")
@click.argument("username")
@click.option("--role", type=click.Choice([r.value for r in Role]), default="pathologist",
              show_default=True)
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.option("--project", "project_names", multiple=True,
              help="A project the account reads (repeatable); admins see every project.")
def create_user_cmd(username: str, role: str, password_stdin: bool,
                    project_names: tuple[str, ...]) -> None:
    """Create an account; prints a generated password unless one is given."""
    from .bootstrap import SetupError, create_user, find_project

    password = sys.stdin.readline().rstrip("\n") if password_stdin else None
    try:
        with session_scope(_settings().database_url) as s:
            projects = [find_project(s, name) for name in project_names]
            _, password_used = create_user(s, username, Role(role), password, projects=projects)
    except SetupError as exc:
        _fail(str(exc))
    click.echo(f"created {role} {username!r}")
    if role != Role.ADMIN.value:
        click.echo("reads: " + (", ".join(project_names) or
                                "no project yet (add it on a project's admin page or with --project)"))
    if not password_stdin:
        click.echo(f"password (shown once): {password_used}")


@main.command("set-password")
@click.argument("username")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
def set_password_cmd(username: str, password_stdin: bool) -> None:
    """Give an account a new password; its open sessions end."""
    from .bootstrap import SetupError, set_password

    password = sys.stdin.readline().rstrip("\n") if password_stdin else None
    try:
        with session_scope(_settings().database_url) as s:
            password_used = set_password(s, username, password)
    except SetupError as exc:
        _fail(str(exc))
    click.echo(f"new password set for {username!r}; its sessions have ended")
    if not password_stdin:
        click.echo(f"password (shown once): {password_used}")


# The name an admin with a lost password looks for (README); the same command.
main.add_command(set_password_cmd, name="reset-password")


@main.command("deactivate-user")
@click.argument("username")
def deactivate_user_cmd(username: str) -> None:
    """Stop an account from logging in; its open sessions end."""
    from .bootstrap import SetupError, deactivate_user

    try:
        with session_scope(_settings().database_url) as s:
            deactivate_user(s, username)
    except SetupError as exc:
        _fail(str(exc))
    click.echo(f"deactivated {username!r}; its sessions have ended")


@main.command("create-project")
@click.argument("name")
@click.option("--preset", default="pbc8", show_default=True, help="pbc8, wbc4 or wbc5")
@click.option("--test-share", default=0.1, show_default=True, type=float)
@click.option("--train-on-reference", is_flag=True,
              help="Use labels that come with imports as training labels.")
@click.option("--min-labels-per-class", default=1, show_default=True, type=click.IntRange(1))
@click.option("--fine-tune-blocks", default=None, type=click.IntRange(0, 11),
              help="InceptionV3 blocks fine-tuned after the head (0: head only). Default: 2 "
                   "where a GPU worker has trained a round, else 0.")
@click.option("--retrain-after", type=click.IntRange(1), default=None,
              help="Start a round automatically after this many new labels.")
def create_project_cmd(name: str, preset: str, test_share: float, train_on_reference: bool,
                       min_labels_per_class: int, fine_tune_blocks: int | None,
                       retrain_after: int | None) -> None:
    """Create a project with a preset of label classes."""
    from .bootstrap import SetupError, create_project

    try:
        with session_scope(_settings().database_url) as s:
            project = create_project(s, name, preset, test_share=test_share,
                                     train_on_reference=train_on_reference,
                                     min_labels_per_class=min_labels_per_class,
                                     fine_tune_blocks=fine_tune_blocks,
                                     retrain_after_new_labels=retrain_after)
            classes = ", ".join(f"{c.name} [{c.hotkey}]" for c in project.classes)
            blocks = project.fine_tune_blocks
    except SetupError as exc:
        _fail(str(exc))
    click.echo(f"created project {name!r}: {classes}")
    if fine_tune_blocks is None:
        click.echo("fine-tuning: " + ("2 blocks (a GPU worker has trained here)" if blocks
                                      else "head only (no GPU worker known; raise it in the "
                                           "project's Settings on a GPU)"))


def _import(settings: Settings, path: Path, project_name: str, source: str | None,
            as_json: bool, trust_labels: bool = False):
    from .bootstrap import SetupError, find_project
    from .ingest import ImportAborted, count_files, import_path

    if not path.exists():
        _fail(f"{path} does not exist")
    try:
        total = count_files(path)
    except FileNotFoundError as exc:
        _fail(str(exc))
    except PermissionError:
        _fail(f"cannot read {path}: permission denied")
    except (zipfile.BadZipFile, OSError):
        _fail(f"{path} is a damaged zip archive (its table of contents cannot be read)")
    # SIGTERM (docker stop, kill) unwinds like Ctrl-C, so the importer removes the
    # files of its uncommitted batch instead of leaving them without rows.
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm) if main_thread else None
    try:
        with session_scope(settings.database_url) as s:
            try:
                project = find_project(s, project_name)
            except SetupError as exc:
                _fail(f"{exc}; create it first with 'hemaloop create-project'")
            if trust_labels:
                # Class-folder names become training labels (all the project's
                # reference labels, as the browser's import explains).
                project.train_on_reference = True
                s.commit()
            # The bar goes to stderr so --json output stays parseable.
            with click.progressbar(length=total, label=f"importing {path.name}",
                                   file=sys.stderr, show_pos=True) as bar:
                try:
                    report = import_path(s, settings.storage_dir, project, path,
                                         max_pixels=settings.max_image_pixels, source=source,
                                         progress=bar.update)
                except ImportAborted as exc:
                    report = exc.report
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    if as_json:
        click.echo(json.dumps(report.as_dict()))
    else:
        click.echo(f"imported {report.imported} ({report.labeled} with reference labels), "
                   f"{report.duplicates} duplicate(s) skipped, {len(report.rejected)} rejected")
        for item in report.rejected:
            click.echo(f"  rejected {item['file']}: {item['reason']}", err=True)
    if report.aborted:
        click.echo(f"error: {report.aborted}", err=True)
        sys.exit(1)
    return report


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)


@main.command("import")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--project", "project_name", required=True)
@click.option("--source", default=None, help="Where the images came from (default: the folder name).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--trust-labels", is_flag=True,
              help="Class-folder names are correct labels: train on them (sets the project's "
                   "train-on-reference; without it only readers' labels train the model).")
def import_cmd(path: Path, project_name: str, source: str | None, as_json: bool,
               trust_labels: bool) -> None:
    """Import images: a folder of class folders (reference labels), a flat folder, or a .zip."""
    _import(_settings(), path, project_name, source, as_json, trust_labels)


@main.command()
@click.option("--demo/--no-demo", default=False,
              help="Also create the demo project and import the bundled cells.")
def bootstrap(demo: bool) -> None:
    """Create the admin account (and the demo project) if they do not exist yet."""
    from sqlalchemy import select

    from models import Project, User

    from .bootstrap import add_all_readers, create_project, create_user

    settings = _settings()
    with session_scope(settings.database_url) as s:
        if s.scalar(select(User).where(User.role == Role.ADMIN)) is None:
            given = os.environ.get("HEMALOOP_ADMIN_PASSWORD") or None
            _, password = create_user(s, "admin", Role.ADMIN, given)
            if given:
                click.echo("created admin account 'admin' with HEMALOOP_ADMIN_PASSWORD")
            else:
                click.echo(f"created admin account 'admin'; password (shown once): {password}")
        else:
            # Run again (every `make run`): nothing is changed, no password either.
            click.echo("an admin account exists; left as it is (a lost password: "
                       "hemaloop reset-password NAME)")
        if demo and s.scalar(select(Project).where(Project.name == DEMO_PROJECT)) is None:
            # Head-only rounds: the demo must be quick on a laptop's CPU. On a GPU
            # worker, raise fine-tune blocks in the project's settings.
            project = create_project(s, DEMO_PROJECT, "pbc8", fine_tune_blocks=0)
            # Every reader already here reads the demo (a fresh install has none).
            add_all_readers(s, project)
            click.echo(f"created project {DEMO_PROJECT!r}")
    if demo:
        with session_scope(settings.database_url) as s:
            project = s.scalar(select(Project).where(Project.name == DEMO_PROJECT))
            from sqlalchemy import func

            from models import Image

            has_images = s.scalar(select(func.count(Image.id)).where(Image.project_id == project.id))
        if not has_images:
            _import(settings, DEMO_DIR, DEMO_PROJECT, "PBC demo (Acevedo et al. 2020)", False)


@main.command("round")
@click.option("--project", "project_name", required=True)
@click.option("--wait/--no-wait", default=True, help="Show progress until the round ends.")
@click.option("--inline", is_flag=True, help="Run in this process instead of on a worker.")
def round_cmd(project_name: str, wait: bool, inline: bool) -> None:
    """Start a training round, as the admin page's button does."""
    from worker.celery_app import make_celery
    from worker.launch import RoundRefused, create_round, enqueue_round
    from worker.rounds import run_round

    from .bootstrap import SetupError, find_project

    settings = _settings()
    with session_scope(settings.database_url) as s:
        try:
            rnd = create_round(s, find_project(s, project_name), trigger="cli")
        except (SetupError, RoundRefused) as exc:
            _fail(str(exc))
        if not inline:
            enqueue_round(s, make_celery(settings), rnd)
        round_id = rnd.id
    click.echo(f"round {round_id} queued")
    if inline:
        # Followed from a thread while the round runs here.
        import threading

        done = threading.Event()
        follower = threading.Thread(target=_follow, args=(settings, round_id, done), daemon=True)
        follower.start()
        try:
            run_round(settings, round_id, worker="cli")
        finally:
            done.set()
            follower.join(timeout=5)
    elif wait:
        _follow(settings, round_id)
    _report(settings, round_id)


def _follow(settings: Settings, round_id: int, stop=None) -> None:
    """A terminal progress bar fed from the round's row (phase, progress, time left).

    The time left is the worker's estimate stored on the row, worded as the admin
    page words it (not click's own extrapolation of the bar, which disagreed).
    """
    with click.progressbar(length=1000, label=f"round {round_id}", file=sys.stderr,
                           show_eta=False, item_show_func=lambda text: text) as bar:
        shown = 0
        while True:
            with session_scope(settings.database_url) as s:
                rnd = s.get(TrainingRound, round_id)
                status, progress, text = rnd.status, rnd.progress, progress_text(rnd)
            step = int(progress * 1000) - shown
            bar.update(max(step, 0), text)
            shown += max(step, 0)
            if status.is_finished or (stop is not None and stop.is_set()):
                break
            time.sleep(1)


def progress_text(rnd: TrainingRound) -> str:
    """The phase and the stored time left, as the admin page's round row shows them."""
    return f"{rnd.phase} · {rnd.time_left}" if rnd.time_left else rnd.phase


def _report(settings: Settings, round_id: int) -> None:
    with session_scope(settings.database_url) as s:
        rnd = s.get(TrainingRound, round_id)
        click.echo(f"round {round_id}: {rnd.status.value}")
        for warning in rnd.warnings or []:
            click.echo(f"  warning: {warning}")
        if rnd.error:
            _fail(rnd.error)


@main.command("describe")
@click.option("--project", "project_name", required=True)
@click.option("--wait/--no-wait", default=True, help="Show progress until the run ends.")
@click.option("--inline", is_flag=True, help="Run in this process instead of on a worker.")
def describe_cmd(project_name: str, wait: bool, inline: bool) -> None:
    """Measure the project's cells that lack measurements (the curators' panel)."""
    from models import DescribeRun
    from worker.celery_app import make_celery
    from worker.describe_launch import DescribeBusy, create_run, enqueue_run

    from .bootstrap import SetupError, find_project

    settings = _settings()
    with session_scope(settings.database_url) as s:
        try:
            run = create_run(s, find_project(s, project_name).id, trigger="cli",
                             stale_seconds=settings.round_stale_seconds)
        except (SetupError, DescribeBusy) as exc:
            _fail(str(exc))
        if not inline and not enqueue_run(s, make_celery(settings), run):
            _fail(run.error)
        run_id = run.id
    click.echo(f"measuring run {run_id} queued")
    if inline:
        from worker.describe import run_describe

        with click.progressbar(length=0, label=f"measuring run {run_id}", file=sys.stderr) as bar:
            def progress(done: int, total: int) -> None:
                bar.length = total
                bar.update(done - bar.pos)

            run_describe(settings, run_id, progress=progress)
    elif wait:
        with click.progressbar(length=0, label=f"measuring run {run_id}", file=sys.stderr) as bar:
            while True:
                with session_scope(settings.database_url) as s:
                    row = s.get(DescribeRun, run_id)
                    status, done, total = row.status, row.cells_done, row.cells_total
                bar.length = total
                bar.update(done - bar.pos)
                if status.is_finished:
                    break
                time.sleep(1)
    with session_scope(settings.database_url) as s:
        row = s.get(DescribeRun, run_id)
        click.echo(f"measuring run {run_id}: {row.status.value}, {row.cells_done} of "
                   f"{row.cells_total} cell(s), {row.cells_failed} could not be measured")
        if row.error:
            _fail(row.error)


@main.command("review-queue")
@click.option("--project", "project_name", required=True)
def review_queue_cmd(project_name: str) -> None:
    """Build the project's next review queue now (cold start before any model)."""
    from worker.ml.selection import SelectionError
    from worker.review_queue import build_review_queue

    from .bootstrap import SetupError, find_project

    settings = _settings()
    with session_scope(settings.database_url) as s:
        try:
            project_id = find_project(s, project_name).id
        except SetupError as exc:
            _fail(str(exc))
    try:
        queue_id = build_review_queue(settings, project_id, trigger="cli")
    except SelectionError as exc:
        _fail(str(exc))
    click.echo(f"review queue {queue_id} is current")


@main.command("export")
@click.option("--project", "project_name", required=True)
@click.option("--format", "format_name", required=True,
              type=click.Choice(["csv", "jsonl", "folders", "model", "agreement"]))
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The file to write ('-' for standard output).")
@click.option("--state", "states", multiple=True,
              help="Only cells in this state (repeatable): open, final, excluded, disputed, "
                   "flagged, or labeled (any final label).")
@click.option("--class", "class_name", default=None, help="Only cells with this final class.")
@click.option("--since", default=None, help="Only cells labeled on or after this date "
                                            "(YYYY-MM-DD, or an ISO date-time; UTC).")
@click.option("--version", "version_id", type=int, default=None,
              help="The model version to package (default: the active one).")
def export_cmd(project_name: str, format_name: str, out_path: Path, states: tuple[str, ...],
               class_name: str | None, since: str | None, version_id: int | None) -> None:
    """Export labels, class folders, the model package or the agreement report."""
    from .bootstrap import SetupError, find_project
    from .exports import ExportError, count_cells, export_stream, parse_filters

    from models.files import atomic_write

    settings = _settings()
    to_stdout = str(out_path) == "-"
    if not to_stdout and not out_path.parent.is_dir():
        _fail(f"{out_path.parent} is not a folder")
    written = 0

    def copy(chunks, target) -> None:
        nonlocal written
        for chunk in chunks:
            target.write(chunk)
            written += len(chunk)

    with session_scope(settings.database_url) as s:
        try:
            project = find_project(s, project_name)
            filters = parse_filters(project, list(states), class_name, since)
        except (SetupError, ExportError) as exc:
            _fail(str(exc))
        walks_cells = format_name in ("csv", "jsonl", "folders")
        total = count_cells(s, project) if walks_cells else 0
        with click.progressbar(length=max(total, 1), label=f"exporting {format_name}",
                               file=sys.stderr, show_pos=walks_cells) as bar:
            try:
                export = export_stream(s, project, format_name, settings.storage_dir,
                                       filters=filters, version_id=version_id,
                                       progress=bar.update)
                if to_stdout:
                    copy(export.chunks, sys.stdout.buffer)
                else:
                    # Written beside the target and renamed at the end: an export that
                    # fails or is interrupted midway leaves nothing, under the name asked
                    # for or beside it (atomic_write removes its temporary file).
                    def write(tmp: Path) -> None:
                        with tmp.open("wb") as target:
                            copy(export.chunks, target)

                    atomic_write(out_path, write)
            except ExportError as exc:
                _fail(str(exc))
            if not walks_cells:
                bar.update(1)
    if not to_stdout:
        click.echo(f"wrote {out_path} ({written:,} bytes)", err=True)


@main.command()
@click.option("--data", "data_dir", required=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="An already-labeled folder: one sub-folder of images per class.")
@click.option("--strategy", "strategies", default="random,margin", show_default=True,
              help="Comma-separated strategies to compare (see README).")
@click.option("--initial", type=int, default=50, show_default=True,
              help="Labels before the first model (random's are random; the others' are "
                   "the cold start).")
@click.option("--batch", type=int, default=50, show_default=True, help="Round size B.")
@click.option("--rounds", type=int, default=10, show_default=True)
@click.option("--repeats", type=int, default=3, show_default=True)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Where curves.csv, curves.svg and summary.json go.")
@click.option("--size", type=int, default=None,
              help="Network input size (default: HEMALOOP_INPUT_SIZE).")
@click.option("--weights", default=None,
              help="Backbone weights (default: HEMALOOP_BACKBONE_WEIGHTS).")
@click.option("--cache", "cache_dir", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="Feature cache (default: the instance's, shared with rounds).")
@click.option("--features", type=click.Choice(FEATURE_SOURCES), default=DEFAULT_FEATURE_SOURCES,
              show_default=True,
              help="What the heads read: backbone features, cell descriptors, or both "
                   "(each standardised), as a project with that setting.")
@click.option("--embeddings", "embeddings_path",
              type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="Precomputed features instead (.npy, one row per cell in the folder's "
                   "order: class folders, then files, sorted by name; duplicates once).")
def simulate(data_dir: Path, strategies: str, initial: int, batch: int, rounds: int,
             repeats: int, out_dir: Path, size: int | None, weights: str | None,
             cache_dir: Path | None, features: str, embeddings_path: Path | None) -> None:
    """Compare active-learning strategies on a labeled folder (labels revealed by an oracle)."""
    from worker.ml.selection import SelectionError, get_strategy
    from worker.simulation.dataset import SimulationRefused, read_class_folders
    from worker.simulation.loop import HeadConfig
    from worker.simulation.run import run_simulation

    settings = _settings()
    names = [name.strip() for name in strategies.split(",") if name.strip()]
    try:
        for name in names:
            get_strategy(name)
    except SelectionError as exc:
        _fail(str(exc))
    if rounds < 0 or repeats < 1:
        _fail("--rounds must be at least 0 and --repeats at least 1.")
    try:
        data = read_class_folders(data_dir)
    except SimulationRefused as exc:
        _fail(str(exc))
    click.echo(f"{len(data)} cells in {len(data.class_names)} classes: "
               + ", ".join(data.class_names), err=True)
    with click.progressbar(length=1000, label="simulating", file=sys.stderr,
                           item_show_func=lambda m: m) as bar:
        shown = [0]

        def progress(done: int, total: int, message: str) -> None:
            target = int(1000 * done / max(total, 1))
            bar.update(max(target - shown[0], 0), message)
            shown[0] = max(target, shown[0])

        try:
            result = run_simulation(
                data, names, initial=initial, batch=batch, rounds=rounds, repeats=repeats,
                out_dir=out_dir, cache_dir=cache_dir or settings.storage_dir / "features",
                input_size=size or settings.input_size,
                weights=weights or settings.backbone_weights,
                config=HeadConfig(epochs=settings.head_epochs, batch_size=settings.batch_size),
                progress=progress, features=features, embeddings=embeddings_path)
        except (SimulationRefused, SelectionError) as exc:
            _fail(str(exc))
    click.echo("features: " + (f"{embeddings_path} (precomputed)" if embeddings_path
                               else features))
    click.echo(f"whole-pool model: accuracy {result.full_accuracy:.3f}; "
               f"target (95%) {result.target:.3f}")
    for t in result.to_target:
        shown_mean = f"{t.mean:.0f} ± {t.sd:.0f}" if t.mean is not None else "not reached"
        click.echo(f"  {t.strategy:18s} labels to reach the target: {shown_mean}")
    click.echo(f"wrote {out_dir / 'curves.csv'}, {out_dir / 'curves.svg'}, "
               f"{out_dir / 'summary.json'}")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
@click.option("--worker/--no-worker", default=True,
              help="Also start the Celery workers (rounds and scoring; strategy comparisons).")
def run(host: str, port: int, worker: bool) -> None:
    """Serve the web app (gunicorn) with its Celery workers, until interrupted."""
    from worker.celery_app import PREDICT_QUEUE, SIMULATE_QUEUE

    settings = _settings()
    # Before anything starts: gunicorn would retry a taken port for a while,
    # after the worker had started and we had said where the app is.
    problem = port_problem(host, port)
    if problem:
        _fail(problem)
    procs: list[subprocess.Popen] = []
    if worker:
        # One worker with an embedded beat: it also starts scheduled rounds.
        procs.append(subprocess.Popen(worker_command() + [
            "--beat", "--schedule", str(settings.instance_dir / "celerybeat-schedule")]))
        # Strategy comparisons on a worker of their own, so a round never waits
        # behind one. It imports TensorFlow only when a comparison starts.
        procs.append(subprocess.Popen(worker_command(SIMULATE_QUEUE, prefix="simulate")))
        # Predictions (the Predict page and API): a worker that keeps the models loaded.
        procs.append(subprocess.Popen(worker_command(PREDICT_QUEUE, prefix="predict")))
    procs.append(subprocess.Popen([
        sys.executable, "-m", "gunicorn", "--bind", f"{host}:{port}", "--workers", "2",
        "--threads", "4", "--access-logfile", "-",
        # Polling requests stay out of the access log.
        "--logger-class", "webapp.access_log.QuietPollingLogger", "webapp.wsgi:app",
    ]))
    click.echo(f"hemaloop is at http://{host}:{port}/ (Ctrl-C stops it)")

    def stop(*_args) -> None:
        for p in procs:
            if p.poll() is None:
                p.terminate()

    signal.signal(signal.SIGTERM, stop)
    try:
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        stop()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
    codes = [p.returncode for p in procs]
    if any(c not in (0, -signal.SIGTERM, None) for c in codes):
        raise SystemExit(1)


def port_problem(host: str, port: int) -> str | None:
    """Why gunicorn could not listen on host:port, or None when it can.

    Bound with SO_REUSEADDR, as gunicorn binds: a port left in TIME_WAIT by a
    server that just stopped is free to it, one a server listens on is not.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"cannot serve on {host}: {exc.strerror}"
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return (f"port {port} on {host} is already in use (another hemaloop, or another "
                        f"server?). Choose another port: 'hemaloop run --port {port + 1}', "
                        f"or 'make run PORT={port + 1}'.")
            if exc.errno == errno.EACCES:
                return (f"not allowed to listen on port {port} (ports below 1024 need "
                        f"privileges). Choose another with --port (make run PORT=...).")
            return f"cannot listen on {host}:{port}: {exc.strerror}"
    return None


def worker_command(queues: str = "train,score,default", name: str | None = None,
                   prefix: str = "hemaloop") -> list[str]:
    """The Celery worker command line; each call names a new worker (``prefix``-pid-random),
    unless ``name`` gives the whole node name.

    Celery's default name is ``celery@<host>`` for every worker on a host; two
    workers on one machine (or a container restarted under the same host
    name) would share it.  A unique name per process keeps the round's
    ``worker`` column and Celery's own view of workers unambiguous.
    """
    import uuid

    # solo pool: one task at a time in the worker process itself, which keeps
    # TensorFlow's threads and memory in one place on a small machine (and, for
    # the predict worker, its loaded models: worker/predict_main.py).
    app = "worker.predict_main" if queues == "predict" else "worker.main"
    return [sys.executable, "-m", "celery", "-A", app, "worker", "--pool", "solo",
            "-Q", queues, "--loglevel", "INFO",
            "-n", name or f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:6]}@%h"]


@main.command()
def beat() -> None:
    """Run Celery beat, which starts scheduled rounds (docker-compose's beat service)."""
    settings = _settings()
    os.execv(sys.executable, [sys.executable, "-m", "celery", "-A", "worker.main", "beat",
                              "--schedule", str(settings.instance_dir / "celerybeat-schedule"),
                              "--loglevel", "INFO"])


@main.command()
@click.option("--queues", default="train,score,default", show_default=True,
              help="Comma-separated; strategy comparisons go to 'simulate'; 'predict' alone "
                   "runs the predict worker (models kept loaded).")
def worker(queues: str) -> None:
    """Run a Celery worker for the given queues (what docker-compose's worker runs)."""
    _settings()
    os.execv(sys.executable, worker_command(queues))


# --- issue 15: self-supervised backbone pretraining --------------------------------------

@main.command("pretrain")
@click.option("--project", "project_name", required=True)
@click.option("--epochs", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.option("--size", type=click.IntRange(75, 299), default=None,
              help="Input size in px (default: HEMALOOP_INPUT_SIZE).")
@click.option("--batch", type=click.IntRange(4, 1024), default=32, show_default=True)
@click.option("--use", is_flag=True,
              help="Make the new backbone the one the project's next round starts from.")
def pretrain_cmd(project_name: str, epochs: int, size: int | None, batch: int, use: bool) -> None:
    """Pretrain the backbone on a project's pool (SimSiam, no labels), in this process.

    The run is recorded like one started from the admin's Pretraining page, where
    its loss curve can be seen and its backbone chosen later.
    """
    from sqlalchemy.exc import IntegrityError

    from models import BackboneChoice, PretrainingRun, PretrainingStatus, ProjectBackbone
    from models.pretraining import active_run_id, fail_lost_pretraining
    from worker.pretraining import run_pretraining_row

    from .bootstrap import SetupError, find_project

    settings = _settings()
    with session_scope(settings.database_url) as s:
        try:
            project = find_project(s, project_name)
        except SetupError as exc:
            _fail(str(exc))
        fail_lost_pretraining(s, settings.round_stale_seconds)  # a dead run blocks nothing
        run = PretrainingRun(project_id=project.id, epochs=epochs,
                             image_size=size or settings.input_size, batch_size=batch)
        s.add(run)
        try:
            s.flush()
        except IntegrityError:  # uq_pretraining_runs_one_active
            s.rollback()
            busy = active_run_id(s, project.id)
            if busy is None:
                raise
            _fail(f"pretraining run {busy} of project '{project_name}' has not finished; "
                  "cancel it or wait")
        run_id, project_id = run.id, project.id
    click.echo(f"pretraining run {run_id}: {epochs} epoch(s) at {size or settings.input_size} px",
               err=True)
    with click.progressbar(length=1, label="pretraining", file=sys.stderr, show_pos=True,
                           item_show_func=lambda m: m) as bar:
        def echo(step: int, total: int, loss: float) -> None:
            bar.length = total
            bar.update(step - bar.pos, f"loss {loss:.4f}")

        status = run_pretraining_row(settings, run_id, echo=echo)
    with session_scope(settings.database_url) as s:
        run = s.get(PretrainingRun, run_id)
        if status != PretrainingStatus.SUCCEEDED:
            _fail(f"pretraining run {run_id} {run.status.value}: {run.error or run.phase}")
        click.echo(f"wrote {settings.storage_dir / run.weights_path} (loss per epoch: "
                   + ", ".join(f"{v:.4f}" for v in run.loss_history) + ")")
        if use:
            row = s.get(ProjectBackbone, project_id) or ProjectBackbone(project_id=project_id)
            row.choice, row.pretraining_run_id = BackboneChoice.PRETRAINED, run_id
            s.add(row)
            click.echo(f"the next round of {project_name} starts from this backbone")
