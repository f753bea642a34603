//! The `#[policy]` attribute of `sluice-sdk`. Use it as `#[sluice_sdk::policy]`; this crate is
//! an implementation detail of the SDK.
//!
//! The attribute keeps the function as written and adds, in an anonymous `const` block, a
//! type implementing the generated `Guest` trait whose `decide` runs the function through
//! `sluice_sdk::__bindings::run`, and wit-bindgen's export macro for it (the canonical-ABI
//! `decide` export and the component-type custom section): the `policy` world's, or with
//! `on_response = f` the `responder` world's, whose `on_response` runs `f` through
//! `sluice_sdk::__bindings::run_response`.

use proc_macro::TokenStream;
use quote::quote;
use syn::{FnArg, ItemFn, ReturnType, parse_macro_input, spanned::Spanned};

/// Exports `fn(&Request) -> Decision` as the policy's `decide` (and, with
/// `on_response = f`, `f` as its `on-response`). See `sluice_sdk::policy`.
#[proc_macro_attribute]
pub fn policy(attr: TokenStream, item: TokenStream) -> TokenStream {
    let on_response = match parse_attr(proc_macro2::TokenStream::from(attr)) {
        Ok(f) => f,
        Err(e) => return e.to_compile_error().into(),
    };
    let func = parse_macro_input!(item as ItemFn);
    if let Err(e) = check(&func) {
        return e.to_compile_error().into();
    }
    let name = &func.sig.ident;
    let glue = match on_response {
        None => quote! {
            impl ::sluice_sdk::__bindings::plain::Guest for __SluicePolicy {
                fn decide() -> ::sluice_sdk::__bindings::plain::Decision {
                    ::sluice_sdk::__bindings::run(#name)
                }
            }

            ::sluice_sdk::__bindings::plain::export_policy!(
                __SluicePolicy with_types_in ::sluice_sdk::__bindings::plain
            );
        },
        Some(f) => quote! {
            impl ::sluice_sdk::__bindings::Guest for __SluicePolicy {
                fn decide() -> ::sluice_sdk::__bindings::Decision {
                    ::sluice_sdk::__bindings::run(#name)
                }
                fn on_response() -> ::sluice_sdk::__bindings::ResponseDecision {
                    ::sluice_sdk::__bindings::run_response(#f)
                }
            }

            ::sluice_sdk::__bindings::export_responder!(
                __SluicePolicy with_types_in ::sluice_sdk::__bindings
            );
        },
    };
    quote! {
        #func

        // The glue is generated code: wit-bindgen's `export!` emits `export_name` and
        // `link_section` attributes, which are unsafe.
        #[allow(unsafe_code)]
        const _: () = {
            struct __SluicePolicy;

            #glue
        };
    }
    .into()
}

/// `on_response = path`, or nothing.
fn parse_attr(attr: proc_macro2::TokenStream) -> syn::Result<Option<syn::Path>> {
    if attr.is_empty() {
        return Ok(None);
    }
    let meta: syn::MetaNameValue = syn::parse2(attr.clone()).map_err(|_| {
        syn::Error::new(
            attr.span(),
            "#[policy] takes nothing or `on_response = function_name`",
        )
    })?;
    if !meta.path.is_ident("on_response") {
        return Err(syn::Error::new(
            meta.path.span(),
            "unknown #[policy] argument: the only one is `on_response = function_name`",
        ));
    }
    match meta.value {
        syn::Expr::Path(p) => Ok(Some(p.path)),
        other => Err(syn::Error::new(
            other.span(),
            "`on_response` takes a function name",
        )),
    }
}

/// Rejects what cannot be a policy function, with an error on the offending part. The types
/// themselves are left to the compiler (`expected fn(&Request) -> Decision`).
fn check(func: &ItemFn) -> syn::Result<()> {
    let sig = &func.sig;
    if let Some(asyncness) = sig.asyncness {
        return Err(syn::Error::new(
            asyncness.span(),
            "a policy function cannot be async",
        ));
    }
    if !sig.generics.params.is_empty() {
        return Err(syn::Error::new(
            sig.generics.span(),
            "a policy function cannot be generic",
        ));
    }
    if sig.inputs.len() != 1 || matches!(sig.inputs.first(), Some(FnArg::Receiver(_))) {
        return Err(syn::Error::new(
            sig.inputs.span(),
            "a policy function takes exactly one argument: `req: &Request`",
        ));
    }
    if matches!(sig.output, ReturnType::Default) {
        return Err(syn::Error::new(
            sig.span(),
            "a policy function returns `Decision`",
        ));
    }
    Ok(())
}
