//! The browser app's bundle, built from `app/` by `npm run build` into `dist/` and committed
//! (CI checks that the committed bundle is what the sources build), so that `cargo build`
//! needs no npm. The app's TypeScript sources and their tests live in `app/`; the bundle
//! itself is embedded here once it is built.
