document.querySelectorAll('table.board th').forEach(function (th) {
  th.addEventListener('click', function () {
    var table = th.closest('table'), body = table.tBodies[0];
    var col = Array.prototype.indexOf.call(th.parentNode.children, th);
    var asc = !th.classList.contains('sorted-asc');
    table.querySelectorAll('th').forEach(function (h) { h.classList.remove('sorted-asc', 'sorted-desc'); });
    th.classList.add(asc ? 'sorted-asc' : 'sorted-desc');
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[col].dataset.value, y = b.cells[col].dataset.value;
      if (x === '' && y === '') return 0;
      if (x === '') return 1;
      if (y === '') return -1;
      var nx = parseFloat(x), ny = parseFloat(y);
      var c = (isNaN(nx) || isNaN(ny)) ? x.localeCompare(y) : nx - ny;
      return asc ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
document.querySelectorAll('details.columns input[type=checkbox]').forEach(function (box) {
  box.addEventListener('change', function () {
    var table = document.getElementById(box.dataset.table), col = parseInt(box.dataset.col, 10);
    Array.prototype.forEach.call(table.rows, function (r) {
      r.cells[col].style.display = box.checked ? '' : 'none';
    });
  });
});
