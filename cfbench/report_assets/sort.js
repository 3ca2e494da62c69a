// sorting: a click on a header, or #sort=KEY[:asc|desc] in the address on load
(function(){
  function sortTable(table, key, dir){
    var th = table.querySelector('th[data-key="' + key + '"]');
    if (!th) { return false; }
    var column = Array.prototype.indexOf.call(th.parentNode.children, th);
    var numeric = th.getAttribute('data-type') === 'num';
    dir = dir || th.getAttribute('data-dir') || 'asc';
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows).map(function(row, i){ return {row: row, i: i}; });
    rows.sort(function(a, b){
      var x = a.row.cells[column].getAttribute('data-v'), y = b.row.cells[column].getAttribute('data-v');
      var ex = x === null || x === '', ey = y === null || y === '';
      if (ex || ey) { return ex && ey ? a.i - b.i : (ex ? 1 : -1); }
      var c = numeric ? parseFloat(x) - parseFloat(y) : x.localeCompare(y);
      if (c === 0) { return a.i - b.i; }
      return dir === 'asc' ? c : -c;
    });
    rows.forEach(function(r){ body.appendChild(r.row); });
    Array.prototype.forEach.call(table.querySelectorAll('th'), function(h){ h.removeAttribute('aria-sort'); });
    th.setAttribute('aria-sort', dir === 'asc' ? 'ascending' : 'descending');
    table.setAttribute('data-sorted-by', key);
    table.setAttribute('data-sort-dir', dir);
    return true;
  }
  document.addEventListener('DOMContentLoaded', function(){
    Array.prototype.forEach.call(document.querySelectorAll('table.sortable'), function(table){
      Array.prototype.forEach.call(table.querySelectorAll('th[data-key]'), function(th){
        th.querySelector('button').addEventListener('click', function(){
          var key = th.getAttribute('data-key');
          var dir = table.getAttribute('data-sorted-by') === key
            ? (table.getAttribute('data-sort-dir') === 'asc' ? 'desc' : 'asc') : null;
          sortTable(table, key, dir);
          history.replaceState(null, '', '#sort=' + key + ':' + table.getAttribute('data-sort-dir'));
        });
      });
    });
    var match = /sort=([^:&]+)(?::(asc|desc))?/.exec(decodeURIComponent(location.hash || ''));
    var table = document.getElementById('leaderboard');
    if (match && table && !sortTable(table, match[1], match[2])) {
      window.cfbenchError('no column ' + match[1] + ' to sort by');
    }
    document.body.setAttribute('data-ready', '1');
  });
})();
