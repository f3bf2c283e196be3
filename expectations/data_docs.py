"""Data Docs that render offline and open over http.

Great Expectations' Data Docs pages load their scripts and styles from public CDNs (jsDelivr, cdnjs, unpkg, ...):
without internet, or behind a company proxy, they open unstyled and their tables do not work. The same files are
packages of the npm registry: ``fetch`` downloads the pinned versions once at install (``make install``; their
integrity is checked against the registry's sha512), and ``localize`` copies them into the home's Data Docs site
and points every page at its own copy, by a path relative to the page (the site moves with the home).

The pages are served over http by ``shopcast ui`` (a browser refuses ``file://`` links from an http page such as
the Dagster UI): ``page_url`` turns a page of the site into the address the checks link to.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import shutil
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REGISTRY = "https://registry.npmjs.org"
VENDOR_DIR = Path(__file__).resolve().parent / "vendor"  # filled by `make install` (git-ignored)
SITE_VENDOR = "static/vendor"  # inside the Data Docs site
# GX's navbar takes its logo from S3 with the data context's id in the address (a usage beacon, seen in a browser
# test): the same image ships in the package, and is served from the site instead
GX_LOGO = re.compile(r'"https://great-expectations-web-assets\.s3[^"/]*\.amazonaws\.com/([\w.-]+\.png)(?:\?[^"]*)?"')


@dataclass(frozen=True)
class NpmPackage:
    name: str
    version: str
    integrity: str                 # the registry's sha512 of the tarball
    keep: tuple[str, ...]          # paths (or folders, ending in /) of the package to keep
    urls: tuple[tuple[str, str], ...]  # (the CDN address Great Expectations' templates use, the path it is)

    @property
    def folder(self) -> str:
        return f"{self.name.replace('/', '__')}@{self.version}"

    @property
    def tarball(self) -> str:
        return f"{REGISTRY}/{self.name}/-/{self.name.rsplit('/', 1)[-1]}-{self.version}.tgz"


_FILTER_CONTROL = "dist/extensions/filter-control/"
# The versions Great Expectations 1.x's Data Docs templates name (great_expectations/render/view/templates/);
# "@5"-style ranges pinned to the newest release of that major version on 2026-12-07.
PACKAGES = (
    NpmPackage("jquery", "3.7.1", "sha512-m4avr8yL8kmFN8psrbFFFmB/If14iN5o9nw/NgnnM+kybDJpRsAynV2BsfpTYrTRysYUdADVD7CkUUizgkpLfg==",
               ("dist/jquery.min.js",), (("https://code.jquery.com/jquery-3.7.1.min.js", "dist/jquery.min.js"),)),
    NpmPackage("popper.js", "1.12.9", "sha512-s0EEi9xiSCdqz9lV4IiVH5yIZnDX/U1t0tCjB+0jXx9jW8lrR7kOpVupiUg175ogqVoudpDXHF1p6dKATCHMeg==",
               ("dist/umd/popper.min.js",),
               (("https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js", "dist/umd/popper.min.js"),)),
    NpmPackage("bootstrap", "4.3.1", "sha512-rXqOmH1VilAt2DyPzluTi2blhk17bO7ef+zLLPlWvG494pDxcM234pJ8wTc/6R40UWizAIIMgxjvxZg5kmsbag==",
               ("dist/css/bootstrap.min.css", "dist/js/bootstrap.min.js"),
               (("https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css", "dist/css/bootstrap.min.css"),
                ("https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js", "dist/js/bootstrap.min.js"))),
    NpmPackage("bootstrap-table", "1.19.1", "sha512-WvV+l1AI/C+zThaKmfHmi/IuayVNB0qdFyEhFx1jyZhO0oLtNJNANkCR3rvJf6Dkh72dsLElxpE/bzK9seEQLA==",
               ("dist/bootstrap-table.min.css", "dist/bootstrap-table.min.js", _FILTER_CONTROL),
               (("https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.css", "dist/bootstrap-table.min.css"),
                ("https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.js", "dist/bootstrap-table.min.js"),
                # the templates take the extension's styles from 1.19.0: the same files in 1.19.1
                *((f"https://unpkg.com/bootstrap-table@{version}/{_FILTER_CONTROL}{file}", _FILTER_CONTROL + file)
                  for version, file in (("1.19.1", "bootstrap-table-filter-control.min.js"),
                                        ("1.19.0", "bootstrap-table-filter-control.min.css"),
                                        ("1.19.0", "bootstrap-table-filter-control.css"))))),
    NpmPackage("bootstrap-datepicker", "1.9.0", "sha512-9rYYbaVOheGYxjOr/+bJCmRPihfy+LkLSg4fIFMT9Od8WwWB/MB50w0JO1eBgKUMbb7PFHQD5uAfI3ArAxZRXA==",
               ("dist/css/bootstrap-datepicker.min.css", "dist/js/bootstrap-datepicker.min.js"),
               (("https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/css/bootstrap-datepicker.min.css",
                 "dist/css/bootstrap-datepicker.min.css"),
                ("https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/js/bootstrap-datepicker.min.js",
                 "dist/js/bootstrap-datepicker.min.js"))),
    NpmPackage("@fortawesome/fontawesome-free", "6.6.0", "sha512-60G28ke/sXdtS9KZCpZSHHkCbdsOGEhIUGlwq6yhY74UpTiToIh8np7A8yphhM4BWsvNFtIvLpi4co+h9Mr9Ow==",
               ("css/all.min.css", "webfonts/"),  # the styles load ../webfonts/ relative to themselves
               (("https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css", "css/all.min.css"),)),
    NpmPackage("@forevolve/bootstrap-dark", "1.1.0", "sha512-A3ucpEpxPoTVO490lZZCfjPXxv832l7mm1IxX3bXyxvgwnPGXDLyh7dWrphXKO8YBAu3EswbBEu3VSW8NRMW3A==",
               ("dist/css/bootstrap-prefers-dark.css",),
               (("https://cdn.jsdelivr.net/npm/@forevolve/bootstrap-dark@1.1.0/dist/css/bootstrap-prefers-dark.css",
                 "dist/css/bootstrap-prefers-dark.css"),)),
    NpmPackage("vega", "5.33.1", "sha512-1fArfVDUqVbb5z8n+/nVQb+VNBzx8svY6CrsyTK4Ujm4yrd9I1auoKxBAPXLCavY1LcrbHUskQbGUP8gXOzyQw==",
               ("build/vega.min.js",), (("https://cdn.jsdelivr.net/npm/vega@5", "build/vega.min.js"),)),
    NpmPackage("vega-lite", "5.23.0", "sha512-l4J6+AWE3DIjvovEoHl2LdtCUkfm4zs8Xxx7INwZEAv+XVb6kR6vIN1gt3t2gN2gs/y4DYTs/RPoTeYAuEg6mA==",
               ("build/vega-lite.min.js",), (("https://cdn.jsdelivr.net/npm/vega-lite@5", "build/vega-lite.min.js"),)),
    NpmPackage("vega-embed", "6.29.0", "sha512-PmlshTLtLFLgWtF/b23T1OwX53AugJ9RZ3qPE2c01VFAbgt3/GSNI/etzA/GzdrkceXFma+FDHNXUppKuM0U6Q==",
               ("build/vega-embed.min.js",), (("https://cdn.jsdelivr.net/npm/vega-embed@6", "build/vega-embed.min.js"),)),
)


class VendorError(RuntimeError):
    """A vendored file could not be fetched or did not match the registry's checksum."""


def _kept(package: NpmPackage, member: str) -> str | None:
    """The path inside the package of a tarball member that is kept (npm tarballs hold a top folder, `package/`)."""
    path = member.split("/", 1)[1] if "/" in member else ""
    return path if any(path == k or (k.endswith("/") and path.startswith(k)) for k in package.keep) else None


def fetch(vendor_dir: Path = VENDOR_DIR, registry_get=None) -> list[str]:
    """Download each pinned package from the npm registry (skipping those already there), check its sha512 against
    the pinned integrity, and keep the files Data Docs load, under ``vendor_dir/<name>@<version>/``. Returns the
    packages fetched."""
    get = registry_get or (lambda url: urllib.request.urlopen(url, timeout=60).read())
    fetched = []
    for package in PACKAGES:
        target = vendor_dir / package.folder
        if (target / ".complete").exists():
            continue
        data = get(package.tarball)
        digest = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
        if digest != package.integrity:
            raise VendorError(f"{package.tarball}: sha512 {digest} is not the pinned {package.integrity}")
        shutil.rmtree(target, ignore_errors=True)
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
            for member in archive.getmembers():
                path = _kept(package, member.name)
                if path is None or not member.isfile():
                    continue
                destination = target / path
                destination.parent.mkdir(parents=True, exist_ok=True)
                destination.write_bytes(archive.extractfile(member).read())
        missing = [path for _, path in package.urls if not (target / path).is_file()]
        if missing:
            raise VendorError(f"{package.tarball}: holds none of {', '.join(missing)}")
        (target / ".complete").touch()
        fetched.append(f"{package.name}@{package.version}")
    return fetched


def is_vendored(vendor_dir: Path = VENDOR_DIR) -> bool:
    return all((vendor_dir / p.folder / ".complete").exists() for p in PACKAGES)


def localize(site_dir: Path, vendor_dir: Path = VENDOR_DIR) -> int:
    """Copy the vendored files into the site (once) and point every page's CDN addresses at them, relative to the
    page. Returns the pages rewritten. Raises VendorError when the files were never fetched (`make install`)."""
    if not is_vendored(vendor_dir):
        raise VendorError(f"the Data Docs' scripts and styles are not in {vendor_dir}: run `make install` (it "
                          "fetches them from the npm registry), or python -m expectations.data_docs")
    site_vendor = site_dir / SITE_VENDOR
    for package in PACKAGES:
        if not (site_vendor / package.folder / ".complete").exists():
            shutil.copytree(vendor_dir / package.folder, site_vendor / package.folder, dirs_exist_ok=True)
    rewritten = 0
    for page in site_dir.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        if "https://" not in text:
            continue
        new = GX_LOGO.sub(lambda found, page=page: f'"{_gx_image(site_vendor, found.group(1), page)}"', text)
        for package in PACKAGES:
            for url, path in package.urls:
                if url in new:
                    local = os.path.relpath(site_vendor / package.folder / path, page.parent)
                    # exact attribute values only ("...vega@5" must not match inside "...vega@5.x/...")
                    new = new.replace(f'"{url}"', f'"{Path(local).as_posix()}"')
        if new != text:
            page.write_text(new, encoding="utf-8")
            rewritten += 1
    return rewritten


def _gx_image(site_vendor: Path, name: str, page: Path) -> str:
    """The path, relative to ``page``, of GX's own copy of an image its templates load from S3."""
    import great_expectations.render.view as gx_view

    local = site_vendor / "great_expectations" / name
    if not local.exists():
        local.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(gx_view.__file__).parent / "static" / "images" / name, local)
    return Path(os.path.relpath(local, page.parent)).as_posix()


def page_url(site_dir: Path, page: Path, base_url: str) -> str:
    """The http address of a page of the site as ``shopcast ui`` serves it (``base_url``: its root)."""
    return f"{base_url.rstrip('/')}/{page.resolve().relative_to(site_dir.resolve()).as_posix()}"


if __name__ == "__main__":
    done = fetch()
    print(f"Data Docs assets in {VENDOR_DIR}: " + (f"fetched {', '.join(done)}" if done else "already there"))
