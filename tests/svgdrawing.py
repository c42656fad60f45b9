"""An SVG that graphviz's dot drew (`pyctr network graph`), read as XML: for the tests that check
what the picture shows and where."""

import re
import xml.etree.ElementTree as ElementTree

SVG = "{http://www.w3.org/2000/svg}"


class Drawing:
    """An SVG made by dot, read as XML: its texts with their positions, and its boxes (the
    clusters, one per host) with their bounds and first line."""

    def __init__(self, path):
        self.root = ElementTree.parse(path).getroot()
        self.texts = [(t.text or "", float(t.get("x")), float(t.get("y")))
                      for t in self.root.iter(f"{SVG}text")]
        self.boxes = {}
        for group in self.root.iter(f"{SVG}g"):
            if group.get("class") != "cluster":
                continue
            outline = group.find(f"{SVG}path")
            if outline is None:
                outline = group.find(f"{SVG}polygon")
            numbers = [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?", outline.get("d") or outline.get("points"))]
            xs, ys = numbers[0::2], numbers[1::2]
            label = group.find(f"{SVG}text").text
            self.boxes[label] = (min(xs), min(ys), max(xs), max(ys))

    def lines(self) -> list[str]:
        return [text for text, _, _ in self.texts]

    def inside(self, box: str, text: str) -> bool:
        """Whether `text` is written (at least once) inside the box labelled `box`."""
        left, top, right, bottom = self.boxes[box]
        return any(t == text and left <= x <= right and top <= y <= bottom for t, x, y in self.texts)
