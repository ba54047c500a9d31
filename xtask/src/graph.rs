//! The import-graph check of `cargo xtask lint`: no import circles between
//! the files of one house (the core, the kernel module).
//!
//! A file is a node named by its top-level module (a file `src/m/x.rs` is
//! part of `m`); an arrow `a -> b` is any path in `a` that resolves, through
//! `super::`/`crate::`/`self::`, to a module `b` of the same house: in `use`
//! trees, in expressions and types, and in macro bodies (as tokens).  Paths
//! into other crates (and the module's `gvt_core`, which is the core's house)
//! are not arrows.  The circles are the strongly connected components with
//! more than one node (Tarjan).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use proc_macro2::{TokenStream, TokenTree};
use syn::visit::Visit;

/// One house: its root file and the directory its modules live in.
pub struct House<'a> {
    pub name: &'a str,
    pub dir: PathBuf,
    pub root: &'a str,
}

/// The arrows of a house: `from -> {to: names}`.
pub type Graph = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

/// Reads every `.rs` file of the house (recursively) and collects its arrows.
pub fn read(house: &House) -> Result<Graph, String> {
    let mut files = Vec::new();
    collect(&house.dir, &mut files)?;
    let mut modules = BTreeSet::new();
    for f in &files {
        if let Some(m) = module_path(house, f).first() {
            modules.insert(m.clone());
        }
    }
    let mut g = Graph::new();
    for f in &files {
        let text = fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
        let ast = syn::parse_file(&text).map_err(|e| format!("{}: {e}", f.display()))?;
        let here = module_path(house, f);
        let mut v = Paths {
            here: &here,
            found: Vec::new(),
        };
        v.visit_file(&ast);
        let Some(from) = here.first() else { continue };
        for (to, name) in v.found {
            if &to != from && modules.contains(&to) {
                g.entry(from.clone())
                    .or_default()
                    .entry(to)
                    .or_default()
                    .insert(name);
            }
        }
        g.entry(from.clone()).or_default();
    }
    Ok(g)
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
    let rd = fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for e in rd {
        let p = e.map_err(|e| e.to_string())?.path();
        if p.is_dir() {
            collect(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out.sort();
    Ok(())
}

/// The module path of a file: `[]` for the root, `["a"]` for `a.rs` or
/// `a/mod.rs`, `["a", "b"]` for `a/b.rs`.
fn module_path(house: &House, f: &Path) -> Vec<String> {
    let rel = f.strip_prefix(&house.dir).unwrap_or(f);
    if rel == Path::new(house.root) {
        return Vec::new();
    }
    let mut parts: Vec<String> = rel
        .iter()
        .map(|s| s.to_string_lossy().into_owned())
        .collect();
    if let Some(last) = parts.pop() {
        let stem = last.trim_end_matches(".rs").to_string();
        if stem != "mod" {
            parts.push(stem);
        }
    }
    parts
}

struct Paths<'a> {
    here: &'a [String],
    /// (top-level module, the name used there)
    found: Vec<(String, String)>,
}

impl Paths<'_> {
    /// Resolves a path's leading `crate`/`super`/`self` segments against
    /// the current module; returns the top-level module and the next name.
    fn resolve(&mut self, segs: &[String]) {
        let mut at: Vec<String> = self.here.to_vec();
        let mut i = 0;
        let mut anchored = false;
        while let Some(s) = segs.get(i) {
            match s.as_str() {
                "crate" => {
                    at.clear();
                    anchored = true;
                }
                "super" => {
                    at.pop();
                    anchored = true;
                }
                "self" => anchored = true,
                _ => break,
            }
            i += 1;
        }
        if !anchored {
            return;
        }
        let rest = &segs[i..];
        let full: Vec<&String> = at.iter().chain(rest.iter()).collect();
        if let Some(top) = full.first() {
            let name = full.get(1).map_or_else(|| (*top).clone(), |n| (*n).clone());
            self.found.push(((*top).clone(), name));
        }
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, t: &syn::UseTree) {
        match t {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => {
                prefix.push(n.ident.to_string());
                self.resolve(&prefix.clone());
                prefix.pop();
            }
            syn::UseTree::Rename(r) => {
                prefix.push(r.ident.to_string());
                self.resolve(&prefix.clone());
                prefix.pop();
            }
            syn::UseTree::Glob(_) => self.resolve(&prefix.clone()),
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(prefix, t);
                }
            }
        }
    }

    /// `super :: x`, `crate :: x` sequences in a macro's tokens.
    fn tokens(&mut self, ts: &TokenStream) {
        let toks: Vec<TokenTree> = ts.clone().into_iter().collect();
        let mut i = 0;
        while i < toks.len() {
            if let TokenTree::Group(g) = &toks[i] {
                self.tokens(&g.stream());
                i += 1;
                continue;
            }
            let mut segs = Vec::new();
            let mut j = i;
            while let Some(TokenTree::Ident(id)) = toks.get(j) {
                segs.push(id.to_string());
                j += 1;
                let colons = matches!((toks.get(j), toks.get(j + 1)), (Some(TokenTree::Punct(a)), Some(TokenTree::Punct(b))) if a.as_char() == ':' && b.as_char() == ':');
                if !colons {
                    break;
                }
                j += 2;
            }
            if segs.len() > 1 && matches!(segs[0].as_str(), "super" | "crate" | "self") {
                self.resolve(&segs);
            }
            i = j.max(i + 1);
        }
    }
}

/// Whether an item is compiled for tests only: its `cfg` is false when
/// `test` is false and no cargo feature is on (the core's features, `fakes`
/// and `guest`, are test support); other names (`gvt_kmod`, `fuzzing`) are
/// unknown.  So `cfg(test)`, `cfg(all(test, not(gvt_kmod)))` and
/// `cfg(any(test, feature = "fakes"))` are test code, which may use any
/// module without making the house's own structure circular.
fn test_only(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg")
            && a.parse_args::<syn::Meta>()
                .is_ok_and(|m| eval(&m) == Some(false))
    })
}

/// A `cfg` predicate in three values (`None`: depends on the build).
fn eval(m: &syn::Meta) -> Option<bool> {
    use syn::punctuated::Punctuated;
    match m {
        syn::Meta::Path(p) => p.is_ident("test").then_some(false),
        syn::Meta::NameValue(nv) => nv.path.is_ident("feature").then_some(false),
        syn::Meta::List(l) => {
            let args: Vec<Option<bool>> = l
                .parse_args_with(Punctuated::<syn::Meta, syn::Token![,]>::parse_terminated)
                .ok()?
                .iter()
                .map(eval)
                .collect();
            if l.path.is_ident("not") {
                args.first().copied().flatten().map(|b| !b)
            } else if l.path.is_ident("all") {
                if args.contains(&Some(false)) {
                    Some(false)
                } else {
                    args.iter().all(|a| *a == Some(true)).then_some(true)
                }
            } else if l.path.is_ident("any") {
                if args.contains(&Some(true)) {
                    Some(true)
                } else {
                    args.iter().all(|a| *a == Some(false)).then_some(false)
                }
            } else {
                None
            }
        }
    }
}

fn item_attrs(it: &syn::Item) -> &[syn::Attribute] {
    use syn::Item::*;
    match it {
        Const(i) => &i.attrs,
        Enum(i) => &i.attrs,
        ExternCrate(i) => &i.attrs,
        Fn(i) => &i.attrs,
        ForeignMod(i) => &i.attrs,
        Impl(i) => &i.attrs,
        Macro(i) => &i.attrs,
        Mod(i) => &i.attrs,
        Static(i) => &i.attrs,
        Struct(i) => &i.attrs,
        Trait(i) => &i.attrs,
        TraitAlias(i) => &i.attrs,
        Type(i) => &i.attrs,
        Union(i) => &i.attrs,
        Use(i) => &i.attrs,
        _ => &[],
    }
}

impl<'ast> Visit<'ast> for Paths<'_> {
    fn visit_item(&mut self, it: &'ast syn::Item) {
        if !test_only(item_attrs(it)) {
            syn::visit::visit_item(self, it);
        }
    }
    fn visit_impl_item_fn(&mut self, f: &'ast syn::ImplItemFn) {
        if !test_only(&f.attrs) {
            syn::visit::visit_impl_item_fn(self, f);
        }
    }
    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        self.use_tree(&mut Vec::new(), &u.tree);
    }
    fn visit_path(&mut self, p: &'ast syn::Path) {
        let segs: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
        self.resolve(&segs);
        syn::visit::visit_path(self, p);
    }
    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        self.tokens(&m.tokens);
        syn::visit::visit_macro(self, m);
    }
    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        // An inline `mod tests { use super::*; }` resolves against the
        // file's module plus the inline one.
        let mut inner: Vec<String> = self.here.to_vec();
        inner.push(m.ident.to_string());
        let mut v = Paths {
            here: &inner,
            found: Vec::new(),
        };
        if let Some((_, items)) = &m.content {
            for it in items {
                v.visit_item(it);
            }
        }
        self.found.append(&mut v.found);
    }
}

/// The circles of a graph (strongly connected components of two or more
/// nodes), each sorted, in a stable order.
pub fn circles(g: &Graph) -> Vec<Vec<String>> {
    struct T<'g> {
        g: &'g Graph,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on: BTreeSet<&'g str>,
        out: Vec<Vec<String>>,
    }
    impl<'g> T<'g> {
        fn visit(&mut self, v: &'g str) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            self.on.insert(v);
            for w in self.g.get(v).into_iter().flat_map(|m| m.keys()) {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(lw);
                } else if self.on.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut c = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on.remove(w);
                    c.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if c.len() > 1 {
                    c.sort();
                    self.out.push(c);
                }
            }
        }
    }
    let mut t = T {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in g.keys() {
        if !t.index.contains_key(v.as_str()) {
            t.visit(v);
        }
    }
    t.out.sort();
    t.out
}

/// Checks a house: `Err` lists every circle with the arrows that make it.
pub fn check(house: &House) -> Result<usize, String> {
    let g = read(house)?;
    let cs = circles(&g);
    if cs.is_empty() {
        return Ok(g.len());
    }
    let mut msg = format!("{}: {} import circle(s):\n", house.name, cs.len());
    for c in cs {
        msg.push_str(&format!("  circle of {}:\n", c.join(", ")));
        for a in &c {
            for (b, names) in g.get(a).into_iter().flatten() {
                if c.contains(b) {
                    let names: Vec<&str> = names.iter().map(String::as_str).collect();
                    msg.push_str(&format!("    {a} -> {b}: {}\n", names.join(", ")));
                }
            }
        }
    }
    Err(msg)
}

/// The facade rule: every method of `impl … <ty>` in `file` takes the
/// services as at most one generic type parameter (`S: Services<…>`), not
/// one parameter per service.  `Err` names each method that takes more.
pub fn facade(file: &Path, ty: &str) -> Result<usize, String> {
    let text = fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    facade_of(&text, ty).map_err(|e| format!("{}: {e}", file.display()))
}

fn facade_of(text: &str, ty: &str) -> Result<usize, String> {
    let f = syn::parse_file(text).map_err(|e| e.to_string())?;
    let mut methods = 0;
    let mut bad = Vec::new();
    for it in &f.items {
        let syn::Item::Impl(i) = it else { continue };
        if i.trait_.is_some() || test_only(&i.attrs) {
            continue;
        }
        let syn::Type::Path(tp) = &*i.self_ty else {
            continue;
        };
        if tp.path.segments.last().is_none_or(|s| s.ident != ty) {
            continue;
        }
        for ii in &i.items {
            let syn::ImplItem::Fn(m) = ii else { continue };
            methods += 1;
            let types = m.sig.generics.type_params().count();
            if types > 1 {
                bad.push(format!("{} ({types} type parameters)", m.sig.ident));
            }
        }
    }
    if bad.is_empty() {
        Ok(methods)
    } else {
        Err(format!(
            "{ty} methods with more than one generic parameter list of services: {}",
            bad.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn house(files: &[(&str, &str)]) -> (tempdir::Dir, Graph) {
        let d = tempdir::Dir::new();
        for (name, text) in files {
            let p = d.0.join(name);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, text).unwrap();
        }
        let g = read(&House {
            name: "t",
            dir: d.0.clone(),
            root: "lib.rs",
        })
        .unwrap();
        (d, g)
    }

    mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                use std::sync::atomic::{AtomicU32, Ordering};
                static N: AtomicU32 = AtomicU32::new(0);
                let p = std::env::temp_dir().join(format!(
                    "xtask-graph-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::SeqCst)
                ));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn a_circle_through_use_paths_and_macros_is_found() {
        let (_d, g) = house(&[
            ("lib.rs", "mod a; mod b; mod c;"),
            ("a.rs", "use super::b::{X, Y as Z};"),
            ("b.rs", "fn f() { let _ = super::c::g(); }"),
            ("c.rs", "fn g() { m!(super::a::W); }"),
        ]);
        assert_eq!(
            circles(&g),
            vec![vec!["a".to_string(), "b".into(), "c".into()]]
        );
        assert!(g["a"]["b"].contains("X") && g["a"]["b"].contains("Y"));
    }

    #[test]
    fn submodules_belong_to_their_top_module_and_crate_paths_resolve() {
        let (_d, g) = house(&[
            ("lib.rs", "mod a; mod b;"),
            (
                "a.rs",
                "mod inner; #[cfg(test)] mod tests { use super::super::b::Q; }",
            ),
            ("a/inner.rs", "use crate::b::P; use super::R;"),
            ("b.rs", "use std::fmt; use other_crate::a::Z;"),
        ]);
        assert!(circles(&g).is_empty());
        assert_eq!(g["a"].keys().collect::<Vec<_>>(), ["b"]);
        assert!(g["b"].is_empty(), "other crates' paths are not arrows");
    }

    #[test]
    fn test_only_code_makes_no_arrows() {
        let (_d, g) = house(&[
            ("lib.rs", "mod a; #[cfg(any(test, feature = \"fakes\"))] mod fakes;"),
            ("a.rs", "#[cfg(test)] mod tests { use super::super::fakes::F; } #[cfg(all(test, not(x)))] use super::fakes::G; #[cfg(not(test))] use super::fakes::H;"),
            ("fakes.rs", "use super::a::A;"),
        ]);
        assert_eq!(g["a"]["fakes"].iter().collect::<Vec<_>>(), ["H"], "{g:?}");
    }

    #[test]
    fn a_two_file_circle_names_its_arrows() {
        let (d, _) = house(&[
            ("lib.rs", ""),
            ("x.rs", "use super::y::A;"),
            ("y.rs", "use super::x::B;"),
        ]);
        let e = check(&House {
            name: "t",
            dir: d.0.clone(),
            root: "lib.rs",
        })
        .unwrap_err();
        assert!(e.contains("x -> y: A") && e.contains("y -> x: B"), "{e}");
    }

    #[test]
    fn a_facade_method_with_a_list_of_services_is_named() {
        let one = "impl<const P: usize> Vgpu<P> { pub fn a<const N: usize, S: Services>(&mut self) {} fn b(&self) {} }";
        assert_eq!(facade_of(one, "Vgpu"), Ok(2));
        let many = "impl<const P: usize> Vgpu<P> { pub fn a<L, H: Host>(&mut self, l: &mut L) where L: GpuLock {} } impl Other { fn c<A, B>() {} }";
        let e = facade_of(many, "Vgpu").unwrap_err();
        assert!(
            e.contains("a (2 type parameters)") && !e.contains("c ("),
            "{e}"
        );
    }
}
