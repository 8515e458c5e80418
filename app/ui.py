"""The Gradio Blocks of the viewer: ``build_app`` makes it, ``launch_app`` serves it.

Layout: the model banner on top (which model and why; a warning for random weights); inputs on the left
(upload, examples, model, pipeline knobs, priors, the plan with its time estimate, Reconstruct and Stop, a
progress bar, the stage list), the result on the right (3D view, display settings that re-export the cached
scene, downloads, per-image table).
Every callback works on the session's ``Workspace`` held in a ``gr.State``; the logic is in ``app.handlers``
and ``app.uploads`` so it is tested without a browser.
"""

from __future__ import annotations

import html
import logging
import queue
import threading
import time
from dataclasses import replace
from pathlib import Path

import gradio as gr
from gradio.utils import get_upload_folder

from app.config import MB, AppConfig
from app.guard import UploadGuard, UploadLedger, delete_claimed
from app.handlers import (
    ALIGN_MODES,
    DONE,
    FAILED,
    GRAPHS,
    STAGES,
    TABLE_HEADERS,
    WARN,
    RunCancelled,
    RunError,
    UnitCosts,
    ViewSettings,
    costs_from_run,
    duration_text,
    export_result,
    image_table,
    iterations,
    overall_fraction,
    page_defaults,
    pairs_wording,
    plan_run,
    probe_costs,
    run_reconstruction,
    stage_counts,
    summary_markdown,
    with_iterations,
)
from app.inspect import inspect_encoder
from app.models import RANDOM_NOTE, ModelStore
from app.uploads import ingest, ingest_folder
from app.workspace import Workspace, WorkspaceManager
from recon.align.confidence import DEFAULT_CONF_THR
from recon.errors import UserError
from recon.images import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS
from recon.settings import ReconstructConfig, UserPriors

logger = logging.getLogger(__name__)

NATIVE = "model default"
IMAGE_SIZES = (NATIVE, "224", "256", "384", "512")
# System fonts only: the default theme would fetch Google Fonts, which an offline server cannot reach.
THEME = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
CSS = """
#status { min-height: 4em; }
.run-progress progress { width: 60%; vertical-align: middle; }
.random-banner { background: #fef3c7; color: #92400e; border: 1px solid #f59e0b; border-radius: 6px;
  padding: 0.5em 0.8em; }
.error-box { color: #b91c1c; font-weight: 600; }
.hint { font-size: 0.85em; opacity: 0.75; }
"""


def default_examples_dir() -> Path | None:
    """The repository's ``demo_data`` folder when it exists (an editable install), else None."""
    folder = Path(__file__).resolve().parents[1] / "demo_data"
    return folder if folder.is_dir() else None


def _examples(folder: Path | None) -> dict[str, Path]:
    if folder is None or not Path(folder).is_dir():
        return {}
    return {
        p.name: p
        for p in sorted(Path(folder).iterdir())
        if p.is_dir() and any(c.suffix.lower() in IMAGE_EXTENSIONS for c in p.iterdir())
    }


def _error(message: str) -> str:
    return f"<span class='error-box'>⚠ {message}</span>"


_MARKS = {DONE: "✓", WARN: "⚠", FAILED: "✗"}


def _stage_log(done: dict[str, tuple[str, str]], current: str | None = None, current_msg: str = "") -> str:
    """The stage list: ``done`` maps a finished stage to ``(mark, text)``; ``current`` is running."""
    lines = []
    for stage in STAGES:
        if stage in done:
            mark, text = done[stage]
            lines.append(f"- {_MARKS[mark]} **{stage}**: {text}")
        elif stage == current:
            lines.append(f"- ▸ **{stage}**: {current_msg}")
        else:
            lines.append(f"- ○ {stage}")
    return "\n".join(lines)


def _progress_html(fraction: float | None, text: str = "") -> str:
    """The run's progress bar, in its own component above the stage list (they never overlap)."""
    if fraction is None:
        return f"<div class='run-progress'>{html.escape(text)}</div>" if text else ""
    pct = 100 * min(max(fraction, 0.0), 1.0)
    return (
        f"<div class='run-progress'><progress max='100' value='{pct:.0f}'></progress> "
        f"<span>{pct:.0f} % · {html.escape(text)}</span></div>"
    )


def _session(request: gr.Request | None) -> str:
    return getattr(request, "session_hash", None) or ""


def _banner(store: ModelStore, key: str | None, reason: str = "") -> str:
    label = store.label(key)
    why = f" ({reason})" if reason else ""
    if store.is_random(key):
        return (
            f"<div class='random-banner'>⚠ <b>{RANDOM_NOTE}</b>.</div>\n\n"
            f"Model: **{label}**{why}. Dense alignment is preselected: random descriptors give no consistent "
            "matches, so sparse alignment places no view."
        )
    return f"Model: **{label}**{why}."


def build_app(
    model=None, *, config: AppConfig | None = None, defaults: ReconstructConfig | None = None, reason: str = ""
) -> gr.Blocks:
    """Build the viewer.

    Args:
        model: the start-up model: an ``nn.Module``, a checkpoint path, a weights name or ``app.models.RANDOM_KEY``
            (loaded now, once); ``None`` offers only the named releases already in the cache.
        config: limits, concurrency, session lifetime, device, workspace and examples folders (default
            ``AppConfig()``).
        defaults: initial values of the pipeline knobs (default ``page_defaults()``; dense alignment for a random
            model); the camera-prior knobs start from ``UserPriors()``.
        reason: why this model was chosen (shown in the banner).

    Returns:
        The ``gr.Blocks`` with its queue configured; serve it with ``launch_app``.
        ``blocks.recon_workspaces`` is its ``WorkspaceManager``, ``blocks.recon_uploads`` its ``UploadLedger``.
    """
    config = config or AppConfig()
    store = ModelStore(model, device=config.device)
    options = store.options()
    present = [(o.label, o.key) for o in options if o.present]
    absent = [o for o in options if not o.present]
    if not present:
        raise RunError(
            "no model is available: pass --model NAME or --checkpoint FILE, download one (`recon weights download "
            "mast3r_vitl16_512`), or start without arguments for recon-tiny (shipped with recon, trained on synthetic "
            "scenes; `--model random:micro` is a random model that checks the install)"
        )
    default_key = store.default_key or present[0][1]
    if defaults is None:
        defaults = page_defaults("dense") if store.is_random(default_key) else page_defaults()
    priors = UserPriors()
    # Inside Gradio's upload folder (GRADIO_TEMP_DIR) Gradio serves the workspace's files where they are;
    # anywhere else it would copy every result into its cache, outliving the session's deletion.
    manager = WorkspaceManager(Path(get_upload_folder()) / "recon-app", ttl_s=config.session_ttl_s)
    ledger = UploadLedger()
    limits = config.limits
    examples = _examples(config.examples_dir if config.examples_dir is not None else default_examples_dir())
    size_value = NATIVE if defaults.image_size is None else str(defaults.image_size)
    sizes = list(IMAGE_SIZES) if size_value in IMAGE_SIZES else [*IMAGE_SIZES, size_value]
    costs: dict[tuple, UnitCosts] = {}
    costs_lock = threading.Lock()
    inspect_lock = threading.Lock()

    def unit_costs(key: str, run_config: ReconstructConfig) -> UnitCosts:
        model = store.get(key)
        size, subsample = run_config.image_size or model.image_size, run_config.subsample
        with costs_lock:
            if (key, size, subsample) not in costs:
                costs[(key, size, subsample)] = probe_costs(model, size, subsample)
            return costs[(key, size, subsample)]

    # No gr.State time-to-live and no Gradio cache sweep: both count from creation or upload, not from the last
    # activity, and would delete a session's files mid-run. The manager's sweeper deletes idle workspaces only.
    with gr.Blocks(title="recon: 3D from photos", analytics_enabled=False) as demo:
        ws_state = gr.State(None, delete_callback=manager.release)
        gr.Markdown(
            "# recon: 3D reconstruction from photos\n"
            "Drop photos of a scene (or a zip of them, or a short video), press **Reconstruct**, then explore the "
            "point cloud and download it. Your files stay in a private temporary folder that is deleted when "
            "you close this tab."
        )
        banner = gr.Markdown(_banner(store, default_key, reason), elem_id="model-banner")
        with gr.Tab("Reconstruct", id="reconstruct"):
            with gr.Row(equal_height=False):
                with gr.Column(scale=2, min_width=320):
                    files = gr.File(
                        label="Photos, a zip of photos, or one short video",
                        file_count="multiple",
                        file_types=sorted(IMAGE_EXTENSIONS | VIDEO_EXTENSIONS | {".zip"}),
                        elem_id="upload",
                    )
                    gr.Markdown(
                        f"At most {limits.max_images} images, {limits.max_file_mb:g} MB per photo, "
                        f"{limits.max_upload_mb:g} MB in all.",
                        elem_classes="hint",
                    )
                    upload_msg = gr.Markdown("", elem_id="upload-status")
                    if examples:
                        with gr.Row():
                            gr.Markdown("Examples:")
                            example_buttons = {
                                name: gr.Button(name, size="sm", elem_id=f"example-{name}") for name in examples
                            }
                    else:
                        example_buttons = {}
                    gallery = gr.Gallery(label="Inputs", columns=6, height=150, elem_id="inputs", allow_preview=False)
                    model_dd = gr.Dropdown(present, value=default_key, label="Model", elem_id="model")
                    if absent:
                        with gr.Accordion(f"Other models ({len(absent)} not downloaded)", open=False):
                            gr.Markdown("\n".join(f"- **{o.label}**: {o.hint}" for o in absent))
                    with gr.Accordion("Pipeline", open=False):
                        graph = gr.Dropdown(
                            list(dict.fromkeys([defaults.graph, *GRAPHS])),
                            value=defaults.graph,
                            allow_custom_value=True,
                            label="Scene graph",
                            info="swin-K: each photo with the next K (photos taken in order); auto: complete for few "
                            "images, retrieval for many; or complete, logwin-K, oneref-I, retrieval-K",
                        )
                        align = gr.Radio(list(ALIGN_MODES), value=defaults.align, label="Alignment")
                        ff_file = gr.Textbox(
                            defaults.feedforward_model or "",
                            label="Feed-forward model file (feedforward+sparse: its cameras start the alignment)",
                        )
                        image_size = gr.Dropdown(sizes, value=size_value, label="Network image size (long side)")
                        niter = gr.Slider(
                            10, 1000, value=iterations(defaults), step=10, label="Alignment iterations (per phase)"
                        )
                        subsample = gr.Slider(2, 16, value=defaults.subsample, step=1, label="Match subsampling (px)")
                        match_thr = gr.Slider(
                            0.0, 10.0, value=defaults.match_conf_thr, step=0.1, label="Minimum match confidence"
                        )
                    with gr.Accordion("Camera priors", open=False):
                        shared = gr.Checkbox(
                            priors.shared_intrinsics, label="All photos from one camera (shared intrinsics)"
                        )
                        focal = gr.Number(
                            priors.focal or 0,
                            label="Known focal length (pixels of the original photos; 0 = estimate)",
                            minimum=0,
                        )
                        exif = gr.Checkbox(priors.use_exif, label="Use EXIF focal lengths")
                        fix_focal = gr.Checkbox(priors.fix_focal, label="Hold EXIF focal lengths fixed")
                    plan_md = gr.Markdown("", elem_id="plan")
                    with gr.Row():
                        run_btn = gr.Button("Reconstruct", variant="primary", elem_id="run", scale=3)
                        stop_btn = gr.Button("Stop", variant="stop", elem_id="stop", scale=1)
                    progress_box = gr.HTML("", elem_id="progress")
                    status = gr.Markdown(_stage_log({}), elem_id="status")
                with gr.Column(scale=3, min_width=420):
                    view3d = gr.Model3D(
                        label="3D view", elem_id="view3d", height=480, clear_color=(0.93, 0.93, 0.95, 1.0)
                    )
                    with gr.Row():
                        # The demos' scale and defaults (MASt3R 1.5 for the sparse aligners, DUSt3R 3 for the
                        # dense ones); it follows the alignment choice below.
                        conf = gr.Slider(
                            0.0,
                            20.0,
                            value=DEFAULT_CONF_THR[defaults.align],
                            step=0.1,
                            label="Confidence threshold",
                            elem_id="conf",
                            scale=3,
                        )
                        clean = gr.Checkbox(True, label="Clean depth", elem_id="clean")
                        # the MASt3R demo's TSDF_thresh slider: off by default, in scene units
                        tsdf = gr.Slider(
                            0.0, 1.0, value=0.0, step=0.01, label="TSDF threshold", elem_id="tsdf", scale=2
                        )
                        mesh = gr.Checkbox(False, label="Mesh", elem_id="mesh")
                        cams = gr.Checkbox(True, label="Cameras", elem_id="cams")
                    view_msg = gr.Markdown("", elem_id="view-status")
                    downloads = gr.File(
                        label="Downloads: GLB, PLY, COLMAP (zip), transforms.json",
                        file_count="multiple",
                        interactive=False,
                        elem_id="downloads",
                    )
                    table = gr.Dataframe(headers=TABLE_HEADERS, label="Per image", interactive=False, elem_id="table")
        with gr.Tab("Inspect the encoder", id="inspect"):
            gr.Markdown(
                "What the model's encoder sees: the PCA of its patch features (first three components as colours) "
                "and the attention of one patch. Click photo 1 to choose the patch; with a second photo, the "
                "decoder's cross-attention of that patch should peak where the patch is seen in photo 2."
            )
            with gr.Row():
                insp_img1 = gr.Image(type="filepath", label="Photo 1 (click a patch)", elem_id="inspect-1")
                insp_img2 = gr.Image(type="filepath", label="Photo 2 (optional)", elem_id="inspect-2")
            insp_btn = gr.Button("Show features and attention", elem_id="inspect-run")
            insp_msg = gr.Markdown("", elem_id="inspect-status")
            insp_gallery = gr.Gallery(label="Pictures", columns=3, height=360, elem_id="inspect-gallery")
            insp_click = gr.State(None)

        knobs = [model_dd, graph, align, image_size, niter, subsample, match_thr, shared, focal, exif, fix_focal]
        knobs.append(ff_file)

        def settings_of(
            graph_v, align_v, size_v, niter_v, sub_v, thr_v, shared_v, focal_v, exif_v, fix_v=False, ff_v=""
        ) -> tuple[ReconstructConfig, UserPriors]:
            """The page's knobs as the pipeline's configs (their own checks raise a ``UserError``)."""
            run_config = replace(
                defaults,
                graph=str(graph_v or GRAPHS[0]).strip(),
                align=str(align_v),
                image_size=None if size_v in (None, NATIVE) else int(size_v),
                subsample=int(sub_v),
                match_conf_thr=float(thr_v),
                feedforward_model=str(ff_v or "").strip() or None,
            )
            known = UserPriors(
                shared_intrinsics=bool(shared_v),
                focal=float(focal_v) if focal_v not in (None, 0, "") else None,
                use_exif=bool(exif_v),
                fix_focal=bool(fix_v),
            )
            return with_iterations(run_config, int(niter_v)), known

        def plan_text(ws, model_key, *knob_values) -> str:
            n = len(ws.inputs) if isinstance(ws, Workspace) and not ws.closed else 0
            if n == 0:
                return ""
            if n == 1 and ws.inputs[0].name.startswith("video"):
                return "Plan: frames are sampled from the video when you run."
            try:
                run_config, _ = settings_of(*knob_values)
                return plan_run(n, run_config, unit_costs(model_key, run_config)).message()
            except UserError as err:
                return _error(str(err))

        def inputs_shown(ws: Workspace) -> list[str]:
            return [str(p) for p in ws.inputs]

        def on_upload(paths, ws, request: gr.Request):
            ws = manager.ensure(ws, _session(request))
            try:
                rep = ingest(ws, paths or [], limits)
            except UserError as err:
                return ws, _error(str(err)), [], None
            finally:
                # Gradio's copies go once ingested (the workspace holds the only copy); only files its upload
                # route wrote are ever deleted, never a path a request merely names.
                delete_claimed(ledger.claim(paths or []))
            shown = inputs_shown(ws)
            gallery_items = [p for p in shown if Path(p).suffix.lower() in IMAGE_EXTENSIONS]
            return ws, rep.message(), gallery_items, shown or None

        def on_clear(ws, request: gr.Request):
            ws = manager.ensure(ws, _session(request))
            ws.clear_inputs()
            return ws, "", [], None, None, [], ""

        def on_knob(ws, *knob_values):
            return plan_text(ws, *knob_values)

        # The plan (pairs, estimated time) follows every change of the inputs or of a knob.
        plan_args = dict(fn=on_knob, inputs=[ws_state, *knobs], outputs=[plan_md], show_progress="hidden")
        plan_args.update(api_visibility="undocumented", concurrency_limit=4, concurrency_id="plan")

        def on_delete(ws, deleted: gr.DeletedFileData):
            # One file removed from the upload box: the workspace follows, so the box and the counts agree.
            if not isinstance(ws, Workspace) or ws.closed:
                return ws, "", []
            ws.remove_input(deleted.file.path)
            n = len(ws.inputs)
            message = f"**{n}** image{'s' if n != 1 else ''} ready." + (
                " A reconstruction needs **at least 2 images**: add more." if n < 2 else ""
            )
            return ws, message, [str(p) for p in ws.inputs if p.suffix.lower() in IMAGE_EXTENSIONS]

        upload_outputs = [ws_state, upload_msg, gallery, files]
        files.upload(on_upload, [files, ws_state], upload_outputs, concurrency_limit=4).then(**plan_args)
        files.delete(on_delete, [ws_state], [ws_state, upload_msg, gallery], concurrency_limit=4).then(**plan_args)
        files.clear(on_clear, [ws_state], [ws_state, upload_msg, gallery, view3d, downloads, table, plan_md])

        for name, button in example_buttons.items():

            def on_example(ws, request: gr.Request, _folder=examples[name]):
                ws = manager.ensure(ws, _session(request))
                try:
                    rep = ingest_folder(ws, _folder, limits)
                except UserError as err:
                    return ws, _error(str(err)), [], None
                shown = inputs_shown(ws)
                return ws, f"Example **{_folder.name}**: " + rep.message(), shown, shown

            button.click(on_example, [ws_state], upload_outputs, concurrency_limit=4).then(**plan_args)

        for knob in knobs:
            knob.change(**plan_args)
        model_dd.change(
            lambda key: _banner(store, key),
            [model_dd],
            [banner],
            show_progress="hidden",
            api_visibility="undocumented",
            queue=False,
        )

        def on_run(
            ws,
            model_key,
            graph_v,
            align_v,
            size_v,
            niter_v,
            sub_v,
            thr_v,
            shared_v,
            focal_v,
            exif_v,
            fix_v,
            ff_v,
            conf_v,
            clean_v,
            mesh_v,
            cams_v,
            tsdf_v,
            request: gr.Request,
        ):
            knob_values = (graph_v, align_v, size_v, niter_v, sub_v, thr_v, shared_v, focal_v, exif_v, fix_v, ff_v)
            ws = manager.ensure(ws, _session(request))
            try:
                run_config, known = settings_of(*knob_values)
                model = store.get(model_key)
            except UserError as err:  # bad settings, an unavailable model, a file that cannot be loaded
                yield ws, "", _error(str(err))
                return
            except Exception as err:  # a bug while loading the model: a short note here, the trace in the log
                logger.exception("loading model %s failed", model_key)
                yield ws, "", _error(f"cannot load model {model_key}: {type(err).__name__}")
                return
            view = ViewSettings(float(conf_v), bool(clean_v), bool(mesh_v), bool(cams_v), float(tsdf_v or 0.0))
            events: queue.Queue = queue.Queue()
            outcome: dict = {}
            rnd = store.is_random(model_key)

            def work():
                try:
                    # Busy from here: the cost probe of a first plan can outlast a short inactivity TTL.
                    with manager.working(ws, run=True) as cancel:
                        n = len(ws.inputs)
                        if n >= 2:  # not a video, whose frames are counted when it is read
                            events.put(("plan", plan_run(n, run_config, unit_costs(model_key, run_config))))
                        outcome["result"] = run_reconstruction(
                            ws,
                            model,
                            run_config,
                            limits,
                            priors=known,
                            view=view,
                            device=config.device,
                            progress=lambda s, f, m: events.put((s, f, m)),
                            cancel=cancel,
                            random_weights=rnd,
                        )
                        with costs_lock:  # later estimates use what this run measured
                            size = run_config.image_size or model.image_size
                            costs[(model_key, size, run_config.subsample)] = costs_from_run(
                                outcome["result"].report, run_config
                            )
                except RunCancelled:
                    outcome["cancelled"] = True
                    logger.info("run of workspace %s stopped on request", ws.root.name)
                except UserError as err:
                    outcome["error"], outcome["stage"] = str(err), getattr(err, "stage", None)
                except Exception as err:  # unexpected: full trace to the server log, one line to the user
                    logger.exception("reconstruction failed")
                    outcome["error"] = f"the reconstruction failed ({type(err).__name__})"
                finally:
                    events.put(None)

            threading.Thread(target=work, name="recon-run", daemon=True).start()
            done: dict[str, tuple[str, str]] = {}
            current, current_msg, fraction = None, "planning (the first run of a model also times it)", 0.0
            plan, eta = None, ""
            last_step: dict[str, str] = {}  # the last step message of each stage, e.g. "decoder pass 40/40"
            t0 = time.monotonic()
            last = 0.0
            yield ws, _progress_html(0.0, "starting"), _stage_log(done)
            while True:
                try:
                    item = events.get(timeout=1.0)
                except queue.Empty:  # nothing new: still redraw the elapsed time, so the page never looks frozen
                    item = ()
                if item is None:
                    break
                if len(item) == 2:  # ("plan", Plan): the estimate, before the first stage
                    plan = item[1]
                    eta = f" of {duration_text(plan.seconds)} estimated" if plan.seconds else ""
                elif item:
                    stage, frac, msg = item
                    if frac >= 1.0:
                        if msg == f"{stage} done":  # the pipeline's generic end: say what the stage did
                            msg = last_step.get(stage, msg)
                            if stage == "pairs" and plan is not None and plan.exact:
                                msg = f"scene graph {plan.graph}: {pairs_wording(plan.n_pairs)}"
                        done[stage] = (DONE, msg)
                        current = None
                    else:
                        current, current_msg = stage, msg
                        if frac > 0.0:
                            last_step[stage] = msg
                    if plan is not None:
                        fraction = overall_fraction(plan, stage, frac)
                    if time.monotonic() - last < 0.25 and frac not in (0.0, 1.0):
                        continue  # at most a few redraws per second
                last = time.monotonic()
                text = f"{current or 'working'}: {current_msg} · {time.monotonic() - t0:.0f} s{eta}"
                yield ws, _progress_html(fraction if plan else None, text), _stage_log(done, current, current_msg)
            elapsed = f"{time.monotonic() - t0:.0f} s"
            if outcome.get("cancelled"):
                yield ws, _progress_html(None, f"stopped after {elapsed}"), _stage_log(done) + "\n\n**Stopped.**"
                return
            if "error" in outcome:
                failed = outcome.get("stage") or current
                if failed in STAGES:
                    done[failed] = (FAILED, "failed")
                yield (
                    ws,
                    _progress_html(None, f"failed after {elapsed}"),
                    _stage_log(done) + "\n\n**Failed.** " + _error(outcome["error"]),
                )
                return
            result = outcome["result"]
            yield (
                ws,
                _progress_html(1.0, f"finished in {elapsed}"),
                _stage_log(stage_counts(result)) + "\n\n" + (summary_markdown(result)),
            )

        def on_stop(ws):
            if isinstance(ws, Workspace):
                ws.cancel.set()
            return ws

        def on_show(ws):
            # A separate step after the run: a Model3D set from a generator is never drawn (Gradio 6.31).
            result = ws.result if isinstance(ws, Workspace) and not ws.closed else None
            if result is None or result.exports is None:
                return None, None, []
            ex = result.exports
            return str(ex.glb), [str(p) for p in ex.downloads], image_table(result)

        run_event = run_btn.click(
            on_run,
            [ws_state, *knobs, conf, clean, mesh, cams, tsdf],
            [ws_state, progress_box, status],
            concurrency_limit=config.concurrency_limit,
            concurrency_id="reconstruct",
            show_progress="hidden",
        )
        run_event.then(on_show, [ws_state], [view3d, downloads, table])
        stop_btn.click(on_stop, [ws_state], [ws_state], cancels=[run_event], queue=False)

        def on_view(ws, conf_v, clean_v, mesh_v, cams_v, tsdf_v):
            skip = gr.skip()
            if not isinstance(ws, Workspace) or ws.closed or ws.result is None:
                return ws, "", skip, skip
            view = ViewSettings(float(conf_v), bool(clean_v), bool(mesh_v), bool(cams_v), float(tsdf_v or 0.0))
            try:
                with manager.working(ws):
                    ex = export_result(ws, view)
            except UserError as err:
                return ws, _error(str(err)), skip, skip
            return (
                ws,
                f"{ex.n_points:,} points above confidence {view.conf_thr:g}"
                + (", cleaned" if view.clean_depth else "")
                + (", as a mesh" if view.as_mesh else "")
                + (f", TSDF {view.tsdf_thresh:g}" if view.tsdf_thresh > 0 else ""),
                str(ex.glb),
                [str(p) for p in ex.downloads],
            )

        # A threshold copied from the MASt3R / DUSt3R demo means the same here: each aligner starts at its demo default.
        align.change(lambda a: gr.update(value=DEFAULT_CONF_THR.get(a, 1.5)), [align], [conf], queue=False)

        view_inputs = [ws_state, conf, clean, mesh, cams, tsdf]
        view_outputs = [ws_state, view_msg, view3d, downloads]
        for slider in (conf, tsdf):
            slider.release(
                on_view, view_inputs, view_outputs, concurrency_limit=config.concurrency_limit, concurrency_id="export"
            )
        for box in (clean, mesh, cams):
            box.input(
                on_view, view_inputs, view_outputs, concurrency_limit=config.concurrency_limit, concurrency_id="export"
            )

        def on_inspect_click(evt: gr.SelectData):
            return tuple(evt.index) if evt.index is not None else None

        def on_inspect(model_key, img1, img2, click):
            if not img1:
                return _error("choose photo 1 first"), []
            try:
                with inspect_lock:  # one inspection at a time: it runs outside the reconstruction queue's limits
                    shown = inspect_encoder(store.get(model_key), img1, img2 or None, click)
            except UserError as err:
                return _error(str(err)), []
            return f"Query patch (row, col) = {shown.query}.", [(pic, caption) for pic, caption in shown.pictures]

        insp_img1.select(on_inspect_click, None, [insp_click], queue=False)
        insp_img1.change(lambda _: None, [insp_img1], [insp_click], queue=False)
        insp_btn.click(
            on_inspect,
            [model_dd, insp_img1, insp_img2, insp_click],
            [insp_msg, insp_gallery],
            concurrency_limit=1,
            concurrency_id="inspect",
        )

        def on_unload(request: gr.Request):
            manager.release_session(_session(request))

        demo.unload(on_unload)

    demo.queue(max_size=config.max_queue, default_concurrency_limit=config.concurrency_limit)

    def janitor():
        ledger.sweep(limits.upload_claim_s)

    manager.start_sweeper(also=janitor)
    demo.recon_workspaces = manager
    demo.recon_uploads = ledger
    demo.recon_config = config
    return demo


def launch_app(
    demo: gr.Blocks,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    share: bool = False,
    prevent_thread_lock: bool = False,
    quiet: bool = False,
):
    """Serve ``demo`` (built by ``build_app``) on ``host:port``; ``share`` asks Gradio for a public link.

    Gradio's ``max_file_size`` bounds each uploaded file; ``app.guard.UploadGuard`` in front of the upload route
    bounds the files and bytes of a request, of a client and of the server. Gradio's own banner (with its
    "set share=True" hint, which means nothing to users of ``recon app``) is replaced by one log line.
    """
    from starlette.middleware import Middleware

    config: AppConfig = getattr(demo, "recon_config", AppConfig())
    limits = config.limits
    max_bytes = int(max(limits.max_upload_mb, limits.max_video_mb, limits.max_file_mb) * MB)
    guard = Middleware(UploadGuard, ledger=demo.recon_uploads, limits=limits)
    out = demo.launch(
        server_name=host,
        server_port=port,
        share=share,
        max_file_size=max_bytes,
        prevent_thread_lock=True,
        quiet=True,
        show_error=False,
        ssr_mode=False,
        theme=THEME,
        css=CSS,
        app_kwargs={"middleware": [guard]},
    )
    if not quiet:
        logger.info("serving on %s%s", demo.local_url, f" and {demo.share_url}" if demo.share_url else "")
    if not prevent_thread_lock:
        demo.block_thread()
    return out
