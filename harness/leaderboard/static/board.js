for (const table of document.querySelectorAll("table.board")) {
  const heads = [...table.tHead.rows[0].cells];
  heads.forEach((th, col) => th.addEventListener("click", () => {
    const ascending = th.getAttribute("aria-sort") !== "ascending";
    heads.forEach(h => h.removeAttribute("aria-sort"));
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    const numeric = th.dataset.type === "num";
    const key = row => {
      const cell = row.cells[col], text = cell.dataset.value ?? cell.textContent.trim();
      return numeric ? (text === "" ? NaN : Number(text)) : text;
    };
    const rows = [...table.tBodies[0].rows].sort((a, b) => {
      const x = key(a), y = key(b);
      if (!numeric) return ascending ? x.localeCompare(y) : y.localeCompare(x);
      if (isNaN(x) || isNaN(y)) return isNaN(x) - isNaN(y);  // empty cells last either way
      return ascending ? x - y : y - x;
    });
    table.tBodies[0].append(...rows);
  }));
}
