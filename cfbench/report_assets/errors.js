// first in <head>: every script error and console.error lands in #js-errors
(function(){
  var found = [];
  function show(){
    var el = document.getElementById('js-errors');
    if (el && found.length) { el.textContent = found.join('\n'); el.hidden = false; }
  }
  window.cfbenchError = function(message){ found.push(String(message)); show(); };
  window.addEventListener('error', function(e){ window.cfbenchError('error: ' + (e.message || e.type)); });
  var original = console.error;
  console.error = function(){
    window.cfbenchError('console.error: ' + Array.prototype.join.call(arguments, ' '));
    return original.apply(console, arguments);
  };
  document.addEventListener('DOMContentLoaded', show);
})();
