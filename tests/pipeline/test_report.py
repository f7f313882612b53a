"""report.html: the Markdown report as a standalone page."""

from __future__ import annotations

from lorashear.pipeline.report import html_page


def test_html_page_renders_tables_figures_and_escapes_text():
    text = ("# Run <a & b> <b>x</b>\n\n| | dense | pruned |\n|---|---:|---:|\n| PPL wiki | 21.70 | 42.03 |\n\n"
            "![layers](figures/layers.png)\n\n`lorashear run x.yaml`\n")
    page = html_page(text, title="lorashear report: <out>")
    assert page.startswith("<!doctype html>") and page.rstrip().endswith("</html>")
    assert "<title>lorashear report: &lt;out&gt;</title>" in page
    assert "<h1>Run &lt;a &amp; b&gt; &lt;b&gt;x&lt;/b&gt;</h1>" in page  # text (raw HTML too) is escaped
    assert '<th style="text-align:right">dense</th>' in page and '<td style="text-align:right">42.03</td>' in page
    assert '<img src="figures/layers.png" alt="layers"' in page and "<code>lorashear run x.yaml</code>" in page
