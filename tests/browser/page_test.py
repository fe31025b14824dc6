"""The fleet page in a real browser (tests/tests/browser.rs runs this).

Headless Debian Chromium driven by Playwright for Python, against the local stack: the
gateway (with an API key, as on AWS) in front of the functions under `cargo lambda watch`,
readings already posted by the Rust test. Asserts from the DOM; prints one JSON line with
the measurements; exits non-zero (with the reason) on any failed expectation.

Environment: PAGE_URL, API_KEY, GROUP (the group posted), POSTED (readings posted),
LATEST_NO2 (the newest no2 value, a warning), SCREENSHOT (where to save the PNG),
USER_DATA_DIR (a fresh profile directory), CHROMIUM (the browser binary).
"""

import json
import os
import sys

from playwright.sync_api import expect, sync_playwright

URL = os.environ["PAGE_URL"]
KEY = os.environ["API_KEY"]
GROUP = os.environ["GROUP"]
POSTED = int(os.environ["POSTED"])
LATEST_NO2 = os.environ["LATEST_NO2"]
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
expect.set_options(timeout=20_000)


def main():
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            os.environ["USER_DATA_DIR"],
            executable_path=os.environ.get("CHROMIUM", "/usr/bin/chromium"),
            headless=True,
            args=ARGS,
            locale="en-US",
            viewport={"width": 1280, "height": 1100},
        )
        page = context.pages[0] if context.pages else context.new_page()
        console = []
        page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
        try:
            result = run(page)
        except Exception:
            print("browser console:\n" + "\n".join(console), file=sys.stderr)
            raise
        context.close()
    print(json.dumps(result))


def run(page):
    # Without a key the data routes are refused: the page says so instead of staying blank,
    # and asks for the key.
    page.goto(f"{URL}/?refresh=2")
    expect(page.locator("#error")).to_be_visible()
    expect(page.locator("#error")).to_contain_text("403")
    expect(page.locator("#key-form")).to_be_visible()
    page.fill("#key-input", KEY)
    page.click("#key-form button[type=submit]")

    # The group is listed with its latest values and its warning.
    row = page.locator(f'#fleet tbody tr[data-groupid="{GROUP}"]')
    expect(row).to_have_count(1)
    expect(row.locator('.value[data-sensor="gasdetector"][data-measure="no2"]')).to_have_text(f"no2 {LATEST_NO2}")
    expect(row.locator('.value[data-measure="no2"]')).to_have_class("value warn")
    expect(row.locator(".warnings")).to_contain_text("no2")
    expect(page.locator("#error")).to_be_hidden()

    # Its position is a marker on the plot (no tiles), red for the warning.
    marker = page.locator(f'#map circle[data-groupid="{GROUP}"]')
    expect(marker).to_have_count(1)
    expect(marker).to_have_class("marker warn")

    # The chart of no2 holds every posted reading and the threshold line.
    chart = page.locator('#charts .chart[data-sensor="gasdetector"][data-measure="no2"]')
    expect(chart).to_have_attribute("data-count", str(POSTED))
    expect(chart).to_have_attribute("data-high", "88")
    expect(chart.locator("canvas")).to_have_count(1)
    points = int(chart.get_attribute("data-points"))
    assert 1 <= points <= POSTED, f"{points} buckets for {POSTED} readings"

    # The warning is listed.
    warning = page.locator(f'#warnings li[data-groupid="{GROUP}"]')
    expect(warning).to_have_count(1)
    expect(warning).to_contain_text(f"no2 {LATEST_NO2}")
    expect(warning).to_contain_text("high 88")

    # It refreshes by itself (?refresh=2: every 2 s).
    # (Expectations, not wait_for_function: the page's CSP forbids the eval it relies on.)
    before = page.locator("body").get_attribute("data-refreshed") or "0"
    expect(page.locator("body")).not_to_have_attribute("data-refreshed", before)

    # Korean and back.
    page.click('[data-lang="ko"]')
    expect(page.locator("h1")).to_have_text("센서 박스 현황")
    expect(page.locator("html")).to_have_attribute("lang", "ko")
    expect(page.locator("#fleet thead th").first).to_have_text("그룹")
    expect(warning).to_contain_text("상한 88")
    page.click('[data-lang="en"]')
    expect(page.locator("h1")).to_have_text("Sensor fleet")

    page.screenshot(path=os.environ["SCREENSHOT"], full_page=True)

    # First meaningful render of a fresh load (the key is kept in localStorage): the
    # fleet table filled with data, marked by the page with the Performance API.
    page.goto(f"{URL}/?refresh=600")
    expect(row).to_have_count(1)
    expect(page.locator("body")).to_have_attribute("data-first-render", "done")
    first_render = page.evaluate("performance.getEntriesByName('fleet-rendered')[0].startTime")
    dom_loaded = page.evaluate(
        "performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd"
    )

    # A failing API call shows a message, and what did load stays on the page.
    page.route(
        "**/api/warnings*",
        lambda route: route.fulfill(
            status=503,
            content_type="application/json",
            headers={"retry-after": "5"},
            body='{"error": "unavailable", "message": "injected failure"}',
        ),
    )
    page.select_option("#range", "7d")
    expect(page.locator("#error")).to_be_visible()
    expect(page.locator("#error")).to_contain_text("warnings")
    expect(page.locator("#error")).to_contain_text("503")
    expect(page.locator("#error")).to_contain_text("injected failure")
    expect(row).to_have_count(1)
    page.unroute("**/api/warnings*")
    page.select_option("#range", "24h")
    expect(page.locator("#error")).to_be_hidden()

    return {
        "first_render_ms": round(first_render, 1),
        "dom_content_loaded_ms": round(dom_loaded, 1),
        "chart_points": points,
        "screenshot": os.environ["SCREENSHOT"],
    }


if __name__ == "__main__":
    main()
