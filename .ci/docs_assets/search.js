// In-page search over assets/search_index.js (one entry per section), with no server and no network.
(function () {
  var input = document.getElementById('search'), box = document.getElementById('search-results');
  var index = window.SEARCH_INDEX || [];
  if (!input || !box) return;
  function esc(s) { return s.replace(/[&<>"]/g, function (c) { return {'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;'}[c]; }); }
  function snippet(text, term) {
    var i = text.toLowerCase().indexOf(term);
    if (i < 0) return text.slice(0, 120);
    var a = Math.max(0, i - 50), s = text.slice(a, i + term.length + 70);
    return (a ? '… ' : '') + s + (a + s.length < text.length ? ' …' : '');
  }
  function run(q) {
    var terms = q.toLowerCase().split(/\s+/).filter(Boolean);
    if (!terms.length) { box.hidden = true; box.innerHTML = ''; return; }
    var hits = [];
    index.forEach(function (e) {
      var t = e.t.toLowerCase(), x = e.x.toLowerCase(), score = 0;
      for (var k = 0; k < terms.length; k++) {
        var inT = t.indexOf(terms[k]) >= 0, inX = x.indexOf(terms[k]) >= 0;
        if (!inT && !inX) return;
        score += (inT ? 10 : 0) + (inX ? 1 : 0);
      }
      hits.push([score, e]);
    });
    hits.sort(function (a, b) { return b[0] - a[0]; });
    box.innerHTML = hits.length ? hits.slice(0, 30).map(function (h) {
      var e = h[1];
      return '<li><a href="' + esc(e.u) + '"><span class="r-title">' + esc(e.t) + '</span>' +
             (e.p !== e.t ? '<span class="r-page">' + esc(e.p) + '</span>' : '') + '<span class="r-snip">' + esc(snippet(e.x, terms[0])) + '</span></a></li>';
    }).join('') : '<li class="none">No results for “' + esc(q) + '”</li>';
    var r = input.getBoundingClientRect();   // fixed, so the sidebar's scrolling does not clip it
    box.style.top = (r.bottom + 4) + 'px'; box.style.left = r.left + 'px';
    box.hidden = false;
  }
  input.addEventListener('input', function () { run(input.value); });
  input.addEventListener('keydown', function (ev) {
    if (ev.key === 'Escape') { input.value = ''; run(''); }
    if (ev.key === 'Enter') { var a = box.querySelector('a'); if (a) a.click(); }
  });
  document.addEventListener('click', function (ev) {   // a click elsewhere closes the results
    if (!ev.target.closest('.search')) box.hidden = true;
  });
  input.addEventListener('focus', function () { if (input.value) run(input.value); });
  document.addEventListener('keydown', function (ev) {
    if (ev.key === '/' && document.activeElement !== input) { ev.preventDefault(); input.focus(); }
  });
  var q = new URLSearchParams(location.search).get('q');
  if (q) { input.value = q; run(q); }
})();
