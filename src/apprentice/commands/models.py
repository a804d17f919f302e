"""Commands about models themselves: `serve` (an OpenAI-compatible server), `chat` and `models` (bundled models)."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from apprentice.models.base import BackendOptions
from apprentice.models.engine import ENGINE_HELP, check_engine
from apprentice.models.spec import SPEC_HELP

console = Console()
MODEL_HELP = f"The model to use ({SPEC_HELP})."


def serve(
    model: str = typer.Option(..., "--model", "-m", help=MODEL_HELP),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0 to accept other machines)."),
    port: int = typer.Option(8000, help="Port to listen on."),
    name: list[str] = typer.Option(
        None, "--name", "--served-model-name",
        help="Model name clients send (default: the spec's last path part); repeat it for aliases, e.g. a name "
             "with 'instruct' in it for tools that choose the API by name."),
    batch_size: int = typer.Option(16, help="Most requests generated together in one batch."),
    device: str = typer.Option(None, help="torch device (default: cuda when available, else cpu)."),
    engine: str = typer.Option("auto", help=ENGINE_HELP),
) -> None:
    """Serve a local model over the OpenAI API (/v1/models, /v1/chat/completions, /v1/completions)."""
    from apprentice.models.engine import load_local
    from apprentice.models.serve import serve as run_server
    from apprentice.models.spec import parse_spec

    spec = parse_spec(model)
    if not spec.is_local:
        raise typer.BadParameter("serve needs a local model (hf:, gguf: or bundled:)", param_hint="--model")
    served = list(name or [spec.target.rstrip("/").split("/")[-1]])
    check_engine(engine)
    console.print(f"loading {spec} ...")
    local = load_local(spec, BackendOptions(batch_size=batch_size, device=device, engine=engine))
    console.print(f"serving [bold]{', '.join(served)}[/] at http://{host}:{port}/v1 (device {local.device}, "
                  f"{local.engine}); Ctrl-C stops")
    run_server(local, served, host, port, batch_size)


def chat(
    prompt: str = typer.Argument(None, help="One message to answer; without it, an interactive chat starts."),
    model: str = typer.Option("bundled:smollm2-135m-instruct", "--model", "-m", help=MODEL_HELP),
    system: str = typer.Option(None, help="A system message to start the conversation with."),
    max_tokens: int = typer.Option(256, help="Most tokens in each answer."),
    temperature: float = typer.Option(0.0, help="Sampling temperature; 0 answers greedily."),
    seed: int = typer.Option(None, help="Seed for sampling, for reproducible answers."),
    engine: str = typer.Option("auto", help=ENGINE_HELP),
) -> None:
    """Talk to a model: one answer to PROMPT, or an interactive conversation (empty line or Ctrl-D to quit)."""
    from apprentice.models import Request, load_model

    llm = load_model(model, BackendOptions(concurrency=1, engine=check_engine(engine)))
    history: list[dict] = [{"role": "system", "content": system}] if system else []

    def answer(text: str) -> str:
        history.append({"role": "user", "content": text})
        [completion] = llm.generate([Request(messages=history, max_tokens=max_tokens, temperature=temperature,
                                             seed=seed)])
        history.append({"role": "assistant", "content": completion.text})
        return completion.text

    if prompt is not None:
        typer.echo(answer(prompt).strip())
        return
    console.print(f"chatting with {model}; an empty line or Ctrl-D quits")
    while True:
        try:
            text = console.input("[bold green]you>[/] ")
        except EOFError:
            break
        if not text.strip():
            break
        console.print(answer(text).strip(), markup=False, highlight=False)


def models(
    prefetch: bool = typer.Option(False, "--prefetch", help="Convert the bundled models into the cache now (for "
                                                           "transformers and for ctranslate2)."),
) -> None:
    """List the bundled models, whether they are installed, and whether the fast-loading cache is ready."""
    from apprentice.models.bundled import BUNDLED, bundled_gguf_path, bundled_status
    from apprentice.models.cache_dir import cache_root
    from apprentice.models.convert import converted_dir

    if prefetch:
        from apprentice.models.ct2_convert import Unsupported, ct2_model_dir

        for name in BUNDLED:
            if bundled_status(name) == "missing":
                continue
            if bundled_status(name) == "installed":
                console.print(f"converting {name} (once; about a minute) ...")
            try:
                ct2_model_dir(str(converted_dir(bundled_gguf_path(name))), f"bundled:{name}")
            except Unsupported as exc:
                console.print(f"bundled:{name} runs on transformers: {exc}")
    table = Table(title=f"bundled models (cache: {cache_root()})")
    for column in ("spec", "role", "state", "install"):
        table.add_column(column)
    for name, bundled in BUNDLED.items():
        table.add_row(f"bundled:{name}", bundled.role, bundled_status(name), bundled.install)
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command()(serve)
    app.command()(chat)
    app.command()(models)
