// layerbench leaderboard: sortable, filterable tables and Plotly figures from JSON embedded in the page.
"use strict";

function cellValue(cell) {
  const raw = cell.dataset.value !== undefined ? cell.dataset.value : cell.textContent.trim();
  const number = parseFloat(raw);
  return raw !== "" && !isNaN(number) && /^[-+0-9.eE]+$/.test(raw) ? number : raw.toLowerCase();
}

function sortTable(table, column, header) {
  const body = table.tBodies[0];
  const ascending = header.getAttribute("aria-sort") !== "ascending";
  const rows = Array.from(body.rows);
  rows.sort((a, b) => {
    const x = cellValue(a.cells[column]), y = cellValue(b.cells[column]);
    // Missing values ("" or "—") sort last either way.
    const xMissing = x === "" || x === "—", yMissing = y === "" || y === "—";
    if (xMissing !== yMissing) return xMissing ? 1 : -1;
    if (x < y) return ascending ? -1 : 1;
    if (x > y) return ascending ? 1 : -1;
    return 0;
  });
  rows.forEach((row) => body.appendChild(row));
  table.querySelectorAll("th").forEach((th) => th.removeAttribute("aria-sort"));  // group headers never carry one
  header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
}

function filterTable(table, text) {
  const needle = text.toLowerCase();
  Array.from(table.tBodies[0].rows).forEach((row) => {
    row.hidden = needle !== "" && !row.textContent.toLowerCase().includes(needle);
  });
}

// Every plot can be taken away: the toolbar's camera saves a PNG (at twice the size), the button beside it an SVG, both named after the plot.
function plotConfig(id) {
  const svg = {
    name: "Download plot as SVG",
    icon: Plotly.Icons.disk,
    click: (plot) => Plotly.downloadImage(plot, { format: "svg", filename: id }),
  };
  return {
    responsive: true, displaylogo: false,
    toImageButtonOptions: { format: "png", filename: id, scale: 2 },
    modeBarButtonsToAdd: [svg],
    modeBarButtonsToRemove: ["sendChartToCloud"],  // a static page uploads nothing anywhere
  };
}

// A figure with several metrics shows one at a time: a drop-down above the plot picks it, and the plot's title and y axis name it.
function addSelector(plot, options) {
  const select = document.createElement("select");
  select.className = "metric-select";
  select.setAttribute("aria-label", "metric shown in " + plot.id);
  select.dataset.plot = plot.id;
  options.forEach((option, i) => select.add(new Option(option.label, String(i))));
  select.addEventListener("change", () => {
    const option = options[Number(select.value)];
    Plotly.update(plot, { visible: option.visible }, { "title.text": option.title, "yaxis.title.text": option.label });
  });
  plot.parentNode.insertBefore(select, plot);
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("table.sortable").forEach((table) => {
    // The last header row names the columns (a grouped table has a row of groups above it).
    const names = table.tHead.rows[table.tHead.rows.length - 1];
    Array.from(names.cells).forEach((th, column) => th.addEventListener("click", () => sortTable(table, column, th)));
  });
  document.querySelectorAll("input.group-toggle").forEach((input) => {
    const table = document.getElementById(input.dataset.table);
    input.addEventListener("change", () => {
      table.querySelectorAll(".g-" + input.dataset.group).forEach((cell) => { cell.hidden = !input.checked; });
    });
  });
  document.querySelectorAll("input.filter").forEach((input) => {
    const table = document.getElementById(input.dataset.table);
    input.addEventListener("input", () => filterTable(table, input.value));
  });
  const figures = JSON.parse(document.getElementById("figures").textContent);
  Object.entries(figures).forEach(([id, figure]) => {
    Plotly.newPlot(id, figure.data, figure.layout, plotConfig(id));
    if (figure.selector) addSelector(document.getElementById(id), figure.selector);
  });
});
