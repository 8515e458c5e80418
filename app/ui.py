"""The Gradio Blocks of the viewer: ``build_app`` makes it, ``launch_app`` serves it.

Layout: inputs on the left (upload, examples, model, pipeline knobs, priors, run button, stage log), the
result on the right (3D view, display settings that re-export the cached scene, downloads, per-image table).
Every callback works on the session's ``Workspace`` held in a ``gr.State``; the logic is in ``app.handlers``
and ``app.uploads`` so it is tested without a browser.
"""

from __future__ import annotations

import logging
import queue
import threading
from pathlib import Path

import gradio as gr
from gradio.utils import get_upload_folder

from app.config import MB, AppConfig
from app.handlers import (
    GRAPHS,
    STAGES,
    TABLE_HEADERS,
    RunError,
    RunSettings,
    ViewSettings,
    export_result,
    image_table,
    run_reconstruction,
    stage_counts,
    summary_markdown,
)
from app.models import ModelStore
from app.uploads import UploadError, ingest, ingest_folder
from app.workspace import Workspace, WorkspaceManager
from recon.images import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS

logger = logging.getLogger(__name__)

NATIVE = "model default"
IMAGE_SIZES = (NATIVE, "224", "256", "384", "512")
# System fonts only: the default theme would fetch Google Fonts, which an offline server cannot reach.
THEME = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
CSS = """
#status { min-height: 4em; }
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


def _stage_log(done: dict[str, str], current: str | None, current_msg: str = "") -> str:
    lines = []
    for stage in STAGES:
        if stage in done:
            lines.append(f"- ✓ **{stage}**: {done[stage]}")
        elif stage == current:
            lines.append(f"- ▸ **{stage}**: {current_msg}")
        else:
            lines.append(f"- ○ {stage}")
    return "\n".join(lines)


def _forget_uploads(paths, keep_under: Path) -> None:
    """Delete Gradio's copies of uploaded files once ingested: the session's workspace now holds the only copy."""
    upload_dir = Path(get_upload_folder()).resolve()
    for p in paths:
        path = Path(p).resolve()
        if upload_dir in path.parents and keep_under.resolve() not in path.parents:
            path.unlink(missing_ok=True)


def _session(request: gr.Request | None) -> str:
    return getattr(request, "session_hash", None) or ""


def build_app(model=None, *, config: AppConfig | None = None, defaults: RunSettings | None = None) -> gr.Blocks:
    """Build the viewer.

    Args:
        model: the start-up model: an ``nn.Module``, a checkpoint path or a weights name (loaded now, once);
            ``None`` offers only the named releases already in the cache.
        config: limits, concurrency, session lifetime, device, workspace and examples folders (default
            ``AppConfig()``).
        defaults: initial values of the pipeline knobs (default ``RunSettings()``).

    Returns:
        The ``gr.Blocks`` with its queue configured; serve it with ``launch_app`` (or ``.launch``).
        ``blocks.recon_workspaces`` is its ``WorkspaceManager`` (tests inspect it).
    """
    config = config or AppConfig()
    defaults = defaults or RunSettings()
    store = ModelStore(model, device=config.device)
    options = store.options()
    present = [(o.label, o.key) for o in options if o.present]
    absent = [o for o in options if not o.present]
    if not present:
        raise RunError(
            "no model is available: pass a model or checkpoint, or download one (`recon weights download NAME`)"
        )
    # Inside Gradio's upload folder (GRADIO_TEMP_DIR) Gradio serves the workspace's files where they are;
    # anywhere else it would copy every result into its cache, outliving the session's deletion.
    manager = WorkspaceManager(Path(get_upload_folder()) / "recon-app")
    limits = config.limits
    examples = _examples(config.examples_dir if config.examples_dir is not None else default_examples_dir())
    size_value = NATIVE if defaults.image_size is None else str(defaults.image_size)
    sizes = list(IMAGE_SIZES) if size_value in IMAGE_SIZES else [*IMAGE_SIZES, size_value]

    ttl = int(config.session_ttl_s)
    # Also sweep Gradio's own copies (uploads never ingested, files of sessions gone) older than a session.
    with gr.Blocks(
        title="recon: 3D from photos", analytics_enabled=False, delete_cache=(max(60, ttl // 4), ttl)
    ) as demo:
        ws_state = gr.State(None, time_to_live=config.session_ttl_s, delete_callback=manager.release)
        gr.Markdown(
            "# recon: 3D reconstruction from photos\n"
            "Drop photos of a scene (or a zip of them, or a short video), press **Reconstruct**, then explore the "
            "point cloud and download it. Your files stay in a private temporary folder that is deleted when "
            "you close this tab."
        )
        with gr.Row(equal_height=False):
            with gr.Column(scale=2, min_width=320):
                files = gr.File(
                    label="Photos, a zip of photos, or one short video",
                    file_count="multiple",
                    file_types=sorted(IMAGE_EXTENSIONS | VIDEO_EXTENSIONS | {".zip"}),
                    elem_id="upload",
                    height=140,
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
                model_dd = gr.Dropdown(present, value=store.default_key or present[0][1], label="Model")
                if absent:
                    with gr.Accordion(f"Other models ({len(absent)} not downloaded)", open=False):
                        gr.Markdown("\n".join(f"- **{o.label}**: {o.hint}" for o in absent))
                with gr.Accordion("Pipeline", open=False):
                    graph = gr.Dropdown(
                        list(dict.fromkeys([defaults.graph, *GRAPHS])),
                        value=defaults.graph,
                        allow_custom_value=True,
                        label="Scene graph",
                        info="auto: complete for few images, retrieval for many; or complete, swin-K, logwin-K, "
                        "oneref-I, retrieval-K",
                    )
                    align = gr.Radio(["sparse", "dense"], value=defaults.align, label="Alignment")
                    image_size = gr.Dropdown(sizes, value=size_value, label="Network image size (long side)")
                    subsample = gr.Slider(2, 16, value=defaults.subsample, step=1, label="Match subsampling (px)")
                    match_thr = gr.Slider(
                        0.0, 10.0, value=defaults.match_conf_thr, step=0.1, label="Minimum match confidence"
                    )
                with gr.Accordion("Camera priors", open=False):
                    shared = gr.Checkbox(
                        defaults.shared_intrinsics, label="All photos from one camera (shared intrinsics)"
                    )
                    focal = gr.Number(
                        defaults.focal,
                        label="Known focal length (pixels of the original photos; empty = estimate)",
                        minimum=0,
                    )
                    exif = gr.Checkbox(defaults.use_exif, label="Use EXIF focal lengths")
                run_btn = gr.Button("Reconstruct", variant="primary", elem_id="run")
                status = gr.Markdown(_stage_log({}, None), elem_id="status")
            with gr.Column(scale=3, min_width=420):
                view3d = gr.Model3D(label="3D view", elem_id="view3d", height=480, clear_color=(0.93, 0.93, 0.95, 1.0))
                with gr.Row():
                    conf = gr.Slider(
                        1.0, 20.0, value=1.5, step=0.1, label="Confidence threshold", elem_id="conf", scale=3
                    )
                    clean = gr.Checkbox(True, label="Clean depth", elem_id="clean")
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

        def on_upload(paths, ws, request: gr.Request):
            ws = manager.ensure(ws, _session(request))
            try:
                rep = ingest(ws, paths or [], limits)
            except UploadError as err:
                return ws, _error(str(err)), []
            finally:
                _forget_uploads(paths or [], manager.root)
            return ws, rep.message(), [str(p) for p in ws.inputs if p.suffix.lower() in IMAGE_EXTENSIONS]

        def on_clear(ws, request: gr.Request):
            ws = manager.ensure(ws, _session(request))
            ws.clear_inputs()
            return ws, "", [], None, None, []

        files.upload(on_upload, [files, ws_state], [ws_state, upload_msg, gallery], concurrency_limit=4)
        files.clear(on_clear, [ws_state], [ws_state, upload_msg, gallery, view3d, downloads, table])

        for name, button in example_buttons.items():

            def on_example(ws, request: gr.Request, _folder=examples[name]):
                ws = manager.ensure(ws, _session(request))
                try:
                    rep = ingest_folder(ws, _folder, limits)
                except UploadError as err:
                    return ws, _error(str(err)), []
                return ws, f"Example **{_folder.name}**: " + rep.message(), [str(p) for p in ws.inputs]

            button.click(on_example, [ws_state], [ws_state, upload_msg, gallery], concurrency_limit=4)

        def on_run(
            ws,
            model_key,
            graph_v,
            align_v,
            size_v,
            sub_v,
            thr_v,
            shared_v,
            focal_v,
            exif_v,
            conf_v,
            clean_v,
            mesh_v,
            cams_v,
            request: gr.Request,
            progress=gr.Progress(),  # noqa: B008 (Gradio injects its progress tracker through this default)
        ):
            ws = manager.ensure(ws, _session(request))
            try:
                settings = RunSettings(
                    graph=str(graph_v or "auto"),
                    align=str(align_v),
                    image_size=None if size_v in (None, NATIVE) else int(size_v),
                    subsample=int(sub_v),
                    match_conf_thr=float(thr_v),
                    shared_intrinsics=bool(shared_v),
                    focal=float(focal_v) if focal_v not in (None, 0, "") else None,
                    use_exif=bool(exif_v),
                    seed=defaults.seed,
                )
                model = store.get(model_key)
            except (ValueError, KeyError, RunError) as err:
                yield ws, _error(str(err))
                return
            except Exception as err:  # a model file that cannot be loaded: say why, keep the trace in the log
                logger.exception("loading model %s failed", model_key)
                yield ws, _error(f"cannot load model {model_key}: {err}")
                return
            view = ViewSettings(float(conf_v), bool(clean_v), bool(mesh_v), bool(cams_v))
            events: queue.Queue = queue.Queue()
            outcome: dict = {}

            def work():
                try:
                    outcome["result"] = run_reconstruction(
                        ws,
                        model,
                        settings,
                        limits,
                        view=view,
                        device=config.device,
                        progress=lambda s, f, m: events.put((s, f, m)),
                    )
                except RunError as err:
                    outcome["error"] = str(err)
                except Exception as err:  # unexpected: full trace to the server log, one line to the user
                    logger.exception("reconstruction failed")
                    outcome["error"] = f"the reconstruction failed ({type(err).__name__}: {err})"
                finally:
                    events.put(None)

            threading.Thread(target=work, name="recon-run", daemon=True).start()
            done: dict[str, str] = {}
            current, current_msg = None, ""
            yield ws, _stage_log(done, None, "")
            while True:
                item = events.get()
                if item is None:
                    break
                stage, frac, msg = item
                if frac >= 1.0:
                    done[stage] = msg
                    current = None
                else:
                    current, current_msg = stage, msg
                k = STAGES.index(stage) if stage in STAGES else 0
                progress((k + frac) / len(STAGES), desc=f"{stage}: {msg}")
                yield ws, _stage_log(done, current, current_msg)
            if "error" in outcome:
                yield ws, _stage_log(done, None) + "\n\n" + _error(outcome["error"])
                return
            result = outcome["result"]
            yield ws, _stage_log(stage_counts(result), None) + "\n\n" + summary_markdown(result)

        def on_show(ws):
            # A separate step after the run: a Model3D set from a generator is never drawn (Gradio 6.31).
            result = ws.result if isinstance(ws, Workspace) and not ws.closed else None
            if result is None or result.exports is None:
                return None, None, []
            ex = result.exports
            return str(ex.glb), [str(p) for p in ex.downloads], image_table(result)

        run_btn.click(
            on_run,
            [
                ws_state,
                model_dd,
                graph,
                align,
                image_size,
                subsample,
                match_thr,
                shared,
                focal,
                exif,
                conf,
                clean,
                mesh,
                cams,
            ],
            [ws_state, status],
            concurrency_limit=config.concurrency_limit,
            concurrency_id="reconstruct",
        ).then(on_show, [ws_state], [view3d, downloads, table])

        def on_view(ws, conf_v, clean_v, mesh_v, cams_v):
            skip = gr.skip()
            if not isinstance(ws, Workspace) or ws.closed or ws.result is None:
                return ws, "", skip, skip
            view = ViewSettings(float(conf_v), bool(clean_v), bool(mesh_v), bool(cams_v))
            try:
                ex = export_result(ws, view)
            except RunError as err:
                return ws, _error(str(err)), skip, skip
            return (
                ws,  # returning the state renews its time-to-live: viewing counts as activity
                f"{ex.n_points:,} points above confidence {view.conf_thr:g}"
                + (", cleaned" if view.clean_depth else "")
                + (", as a mesh" if view.as_mesh else ""),
                str(ex.glb),
                [str(p) for p in ex.downloads],
            )

        view_inputs = [ws_state, conf, clean, mesh, cams]
        view_outputs = [ws_state, view_msg, view3d, downloads]
        conf.release(
            on_view, view_inputs, view_outputs, concurrency_limit=config.concurrency_limit, concurrency_id="export"
        )
        for box in (clean, mesh, cams):
            box.input(
                on_view, view_inputs, view_outputs, concurrency_limit=config.concurrency_limit, concurrency_id="export"
            )

        def on_unload(request: gr.Request):
            manager.release_session(_session(request))

        demo.unload(on_unload)

    demo.queue(max_size=config.max_queue, default_concurrency_limit=config.concurrency_limit)
    demo.recon_workspaces = manager
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

    Uploads larger than the session limit are refused by the server before they are written anywhere.
    """
    config: AppConfig = getattr(demo, "recon_config", AppConfig())
    limits = config.limits
    max_bytes = int(max(limits.max_upload_mb, limits.max_video_mb, limits.max_file_mb) * MB)
    return demo.launch(
        server_name=host,
        server_port=port,
        share=share,
        max_file_size=max_bytes,
        prevent_thread_lock=prevent_thread_lock,
        quiet=quiet,
        show_error=False,
        ssr_mode=False,
        theme=THEME,
        css=CSS,
    )
