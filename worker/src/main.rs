//! `worker` binary: the shipped job types behind [`worker::main_with`].

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    worker::main_with(std::env::args_os(), |registry| registry, shared::jobs::Services::new()).await
}
