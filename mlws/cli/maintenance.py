"""``mlws fsck`` and ``mlws gc``: checking and cleaning the workspace's storage."""

from __future__ import annotations

import click

from .common import open_workspace, print_json, progress_bar


@click.command("fsck")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def fsck_cmd(ctx: click.Context, as_json: bool) -> None:
    """Check the catalog, re-hash every blob and check every manifest. Exit 1 on problems.

    \b
    Example:
      mlws fsck
    """
    from ..errors import CatalogDamaged, CatalogMissing
    from ..maintenance import fsck
    from ..workspace import Workspace, find_workspace_path

    path, _create = find_workspace_path((ctx.find_root().obj or {}).get("workspace"))
    try:
        ws = Workspace(path, _checking=True)
    except (CatalogDamaged, CatalogMissing) as e:
        if as_json:
            print_json({"ok": False, "catalog_problems": [str(e)]})
        else:
            click.echo(f"catalog: {e}")
        raise click.ClickException("workspace has problems (see above)") from None
    ctx.call_on_close(ws.close)
    with progress_bar("Checking blobs", as_json=as_json) as progress:
        rep = fsck(ws, progress=progress)
    if as_json:
        print_json(rep.as_dict())
    else:
        click.echo(
            f"catalog: {'ok' if not rep.catalog_problems else '; '.join(rep.catalog_problems)}"
        )
        click.echo(
            f"blobs checked: {rep.blobs_checked}, corrupted: {len(rep.corrupted)}, missing: {len(rep.missing)}, unreadable manifests: {len(rep.bad_manifests)}"
        )
        for d in rep.corrupted:
            click.echo(f"  corrupted {d}")
        for d in rep.missing:
            click.echo(f"  missing {d}")
        for d in rep.bad_manifests:
            click.echo(f"  bad manifest {d}")
    if not rep.ok:
        raise click.ClickException("workspace has problems (see above)")


@click.command("gc")
@click.option("--dry-run", is_flag=True, help="Only report what would be removed.")
@click.option(
    "--grace",
    type=float,
    default=3600.0,
    show_default=True,
    help="Keep unreferenced blobs younger than this many seconds.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def gc_cmd(ctx: click.Context, dry_run: bool, grace: float, as_json: bool) -> None:
    """Remove blobs that no run, snapshot or file references.

    \b
    Example:
      mlws gc --dry-run
    """
    from ..maintenance import gc

    ws = open_workspace(ctx)
    with progress_bar("Removing blobs", as_json=as_json or dry_run) as progress:
        rep = gc(ws, dry_run=dry_run, grace_s=grace, progress=progress)
    if as_json:
        print_json(rep.as_dict())
    else:
        verb = "would remove" if dry_run else "removed"
        click.echo(
            f"{verb} {rep.removed} blob(s), {rep.bytes_freed / 1e6:.1f} MB; kept {rep.kept_recent} recent unreferenced blob(s)"
        )
