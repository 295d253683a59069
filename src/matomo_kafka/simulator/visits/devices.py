"""What a visit was made with: device, operating system, browser and screen resolutions,
with their weights."""

from __future__ import annotations

from matomo_kafka.simulator.config import JSON
from matomo_kafka.simulator.visits.catalogue import _weighted

_DEV = "plugins/Morpheus/icons/dist/"


def _device(
    dtype: str, brand: str, model: str, os_full: str, os_name: str, os_code: str,
    os_ver: str, family: str, family_desc: str, bname: str, bcode: str, bver: str,
    resolutions: tuple[str, ...],
) -> tuple[JSON, tuple[str, ...]]:  # fmt: skip
    fields: JSON = {
        "deviceType": dtype,
        "deviceTypeIcon": f"{_DEV}devices/{dtype.lower()}.png",
        "deviceBrand": brand,
        "deviceModel": model,
        "operatingSystem": os_full,
        "operatingSystemName": os_name,
        "operatingSystemIcon": f"{_DEV}os/{os_code}.png",
        "operatingSystemCode": os_code,
        "operatingSystemVersion": os_ver,
        "browserFamily": family,
        "browserFamilyDescription": family_desc,
        "browser": f"{bname} {bver}",
        "browserName": bname,
        "browserIcon": f"{_DEV}browsers/{bcode}.png",
        "browserCode": bcode,
        "browserVersion": bver,
    }
    return fields, resolutions


_DESKTOP_RES = ("1920x1080", "1366x768", "2560x1440", "1440x900", "1280x800")
_DEVICES = _weighted(
    [
        (_device("Desktop", "Unknown", "Generic Desktop", "GNU/Linux", "GNU/Linux", "LIN", "",
                 "Blink", "Blink (Chrome, Opera)", "Chrome", "CH", "120.0", _DESKTOP_RES), 20),
        (_device("Desktop", "Unknown", "Generic Desktop", "Windows 10", "Windows", "WIN", "10",
                 "Gecko", "Gecko (Firefox)", "Firefox", "FF", "123.0", _DESKTOP_RES), 18),
        (_device("Desktop", "Unknown", "Generic Desktop", "Windows 10", "Windows", "WIN", "10",
                 "Blink", "Blink (Chrome, Opera)", "Microsoft Edge", "PS", "122.0",
                 _DESKTOP_RES), 14),
        (_device("Desktop", "Apple", "", "Mac 14.3", "Mac", "MAC", "14.3", "WebKit",
                 "WebKit (Safari)", "Safari", "SF", "17.3", ("2560x1600", "1440x900")), 10),
        (_device("Smartphone", "Apple", "iPhone", "iOS 17.3", "iOS", "IOS", "17.3", "WebKit",
                 "WebKit (Safari)", "Mobile Safari", "MF", "17.3", ("390x844", "430x932")), 20),
        (_device("Smartphone", "Samsung", "Galaxy S23", "Android 14", "Android", "AND", "14",
                 "Blink", "Blink (Chrome, Opera)", "Chrome Mobile", "CM", "121.0",
                 ("360x780", "412x915")), 13),
        (_device("Tablet", "Apple", "iPad", "iPadOS 17.3", "iPadOS", "IPA", "17.3", "WebKit",
                 "WebKit (Safari)", "Mobile Safari", "MF", "17.3", ("820x1180",)), 5),
    ]
)  # fmt: skip
