//! The `#[policy]` attribute of `sluice-sdk`. Use it as `#[sluice_sdk::policy]`; this crate is
//! an implementation detail of the SDK.
//!
//! The attribute keeps the function as written and adds, in an anonymous `const` block, a
//! type implementing the generated `Guest` trait whose `decide` runs the function through
//! `sluice_sdk::__bindings::run`, and wit-bindgen's `export!` for it (the canonical-ABI
//! `decide` export and the component-type custom section).

use proc_macro::TokenStream;
use quote::quote;
use syn::{FnArg, ItemFn, ReturnType, parse_macro_input, spanned::Spanned};

/// Exports `fn(&Request) -> Decision` as the policy's `decide`. See `sluice_sdk::policy`.
#[proc_macro_attribute]
pub fn policy(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        let attr = proc_macro2::TokenStream::from(attr);
        return syn::Error::new(attr.span(), "#[policy] takes no arguments")
            .to_compile_error()
            .into();
    }
    let func = parse_macro_input!(item as ItemFn);
    if let Err(e) = check(&func) {
        return e.to_compile_error().into();
    }
    let name = &func.sig.ident;
    quote! {
        #func

        // The glue is generated code: wit-bindgen's `export!` emits `export_name` and
        // `link_section` attributes, which are unsafe.
        #[allow(unsafe_code)]
        const _: () = {
            struct __SluicePolicy;

            impl ::sluice_sdk::__bindings::Guest for __SluicePolicy {
                fn decide(
                    req: &::sluice_sdk::__bindings::Request,
                ) -> ::sluice_sdk::__bindings::Decision {
                    ::sluice_sdk::__bindings::run(req, #name)
                }
            }

            ::sluice_sdk::__bindings::export!(
                __SluicePolicy with_types_in ::sluice_sdk::__bindings
            );
        };
    }
    .into()
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
