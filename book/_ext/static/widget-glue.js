/* Glue for pages with saved ipywidgets state; myst-nb loads it between RequireJS and the
 * widget manager (@jupyter-widgets/html-manager's embed-amd.js). See book/_ext/vendor_js.py.
 */
(function () {
  "use strict";
  var script = document.currentScript;

  // 1. Each module bundled in embed-amd.js loads its icon fonts from the folder of its own
  //    RequireJS module URL, which RequireJS resolves against the page (e.g.
  //    notebooks/@jupyter-widgets/...). Map every bundled module into the folder that
  //    embed-amd.js comes from, where the fonts are.
  var dist = script && script.getAttribute("data-html-manager-dist");
  if (dist && window.require && window.require.config) {
    var url = new URL(dist, script.src).href.replace(/\/$/, "");
    var paths = { "@jupyter-widgets/html-manager/dist": url };
    ["base", "base7", "controls", "controls7", "html-manager"].forEach(function (name) {
      paths["@jupyter-widgets/" + name] = url + "/" + name;
    });
    window.require.config({ paths: paths });
  }

  // 2. ipywidgets typesets widget labels with MathJax 2's MathJax.Hub.Queue, which
  //    MathJax 3 (what Sphinx loads) does not have. Translate those calls once MathJax 3
  //    has replaced its configuration object (its script is deferred, so it has run by
  //    DOMContentLoaded; the widgets render later, on "load").
  window.addEventListener("DOMContentLoaded", function () {
    var mj = window.MathJax;
    if (!mj || mj.Hub) return;
    mj.Hub = {
      Queue: function () {
        for (var i = 0; i < arguments.length; i++) {
          var job = arguments[i];
          if (Array.isArray(job) && job[0] === "Typeset" && mj.typesetPromise) {
            var ready = mj.startup && mj.startup.promise ? mj.startup.promise : Promise.resolve();
            ready.then(function (el) { return function () { return mj.typesetPromise([el]); }; }(job[2]));
          }
        }
      },
    };
  });
})();
