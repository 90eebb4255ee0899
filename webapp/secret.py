"""Per-installation secret key for the embedded mode, generated once into the data dir."""

from pathlib import Path


def installation_secret(data_dir: Path) -> str:
    from django.core.management.utils import get_random_secret_key

    path = data_dir / "secret_key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    key = get_random_secret_key()
    path.write_text(key)
    path.chmod(0o600)
    return key
