//! `api` binary: the shipped job types behind [`api::main_with`].

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    api::main_with(std::env::args_os(), |registry| registry).await
}
