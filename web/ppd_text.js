// Shows the text a PPD node sends as `ui.text` (model info, processed size, saved files) in a
// read-only box under the node. ComfyUI's frontend only hands `ui` to `node.onExecuted`; it draws
// no text itself. The box is left out of saved workflows and of the prompt.
import { app } from "../../scripts/app.js";
import { ComfyWidgets } from "../../scripts/widgets.js";

const WIDGET = "ppd_text";
const MAX_HEIGHT = 240; // px; longer text scrolls

// The widget's height in px: the text's wrapped height once the box is on the page (else ~15 px a
// line) plus the DOM widget's margins.
function textHeight(widget) {
  const el = widget.element;
  const old = el.style.height;
  el.style.height = "0px";
  const measured = el.scrollHeight;
  el.style.height = old;
  const estimate = widget.value.split("\n").length * 15 + 6;
  return Math.min(Math.max(measured || estimate, 24) + 4 + 2 * widget.margin, MAX_HEIGHT);
}

function fit(node, widget) {
  widget.ppdHeight = textHeight(widget);
  const [w, h] = node.computeSize();
  node.setSize([Math.max(node.size[0], w), Math.max(node.size[1], h)]);
  app.graph.setDirtyCanvas(true, true);
}

function showText(node, lines) {
  let widget = node.widgets?.find((w) => w.name === WIDGET);
  if (!widget) {
    widget = ComfyWidgets.STRING(node, WIDGET, ["STRING", { multiline: true }], app).widget;
    widget.element.readOnly = true;
    widget.element.style.lineHeight = "1.3"; // room for underscores in file names
    widget.serialize = false;          // not in the workflow's widgets_values
    widget.options.serialize = false;  // not sent as an input in the prompt
    widget.options.getMinHeight = () => widget.ppdHeight;
    widget.options.getMaxHeight = () => widget.ppdHeight;
  }
  widget.value = lines.join("\n");
  fit(node, widget);
  requestAnimationFrame(() => fit(node, widget)); // again once the box is laid out at its width
}

app.registerExtension({
  name: "comfyui_ppd.text",
  beforeRegisterNodeDef(nodeType, nodeData) {
    if (!nodeData.name.startsWith("PPD_")) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      if (Array.isArray(message?.text) && message.text.length) showText(this, message.text);
    };
  },
});
