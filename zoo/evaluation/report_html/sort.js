// Sortable tables: a click on a column's header sorts the rows by that column, a second click
// the other way. Cells with a data-value sort by that number (empty: no value, always last);
// the others by their text, digits in numeric order.
function sortKey(row, column) {
  const cell = row.cells[column];
  if (cell.dataset.value === undefined) return cell.textContent.trim();
  return cell.dataset.value === "" ? null : Number(cell.dataset.value);
}
function compareKeys(a, b) {
  if (a === null || b === null) return (a === null) - (b === null);
  if (typeof a === "number" && typeof b === "number") return a - b;
  return String(a).localeCompare(String(b), undefined, { numeric: true });
}
for (const table of document.querySelectorAll("table.sortable")) {
  const headers = Array.from(table.tHead.rows[0].cells);
  headers.forEach((header, column) => {
    header.querySelector("button").addEventListener("click", () => {
      const ascending = header.getAttribute("aria-sort") !== "ascending";
      for (const other of headers) other.removeAttribute("aria-sort");
      header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      const body = table.tBodies[0];
      const rows = Array.from(body.rows);
      rows.sort((a, b) => {
        const ka = sortKey(a, column), kb = sortKey(b, column);
        if (ka === null || kb === null) return compareKeys(ka, kb);
        return ascending ? compareKeys(ka, kb) : compareKeys(kb, ka);
      });
      body.append(...rows);
    });
  });
}
