# Homebrew formula for a tap: `brew install <owner>/mlxserve/mlxserve`, then
# `brew services start mlxserve` serves http://localhost:1234/v1 at every login.
class Mlxserve < Formula
  include Language::Python::Virtualenv

  desc "Local OpenAI-compatible LLM server for MLX models, with an LM Studio-style REST API"
  homepage "https://github.com/mlxserve/mlxserve"
  # The PyPI source release; set sha256 from the published file when releasing a new version.
  url "https://files.pythonhosted.org/packages/source/m/mlxserve/mlxserve-0.1.0.tar.gz"
  license "MIT"
  head "https://github.com/mlxserve/mlxserve.git", branch: "main"

  # MLX runs on Apple Silicon GPUs through Metal; Intel Macs are not supported by MLX.
  depends_on arch: :arm64
  depends_on :macos
  depends_on "python@3.12"

  def install
    venv = virtualenv_create(libexec, "python3.12")
    # mlx, mlx-lm, mlx-vlm and faster-whisper (the `vision` and `speech` extras, as
    # scripts/install.sh installs them) and their dependencies are binary wheels from PyPI,
    # installed with the package rather than listed as ~40 resources; the C sampler is compiled
    # here with clang.
    system venv.root/"bin/python", "-m", "pip", "install", "--no-cache-dir",
           "#{buildpath}[speech,vision]"
    bin.install_symlink libexec/"bin/mlxserve"
  end

  service do
    run [opt_bin/"mlxserve", "serve", "--port", "1234"]
    # The user's own store (~/.mlxserve) and the models it finds in place (~/.cache/huggingface,
    # ~/.lmstudio/models): launchd starts services without the login shell's HOME.
    environment_variables PATH: std_service_path_env, HOME: Dir.home
    keep_alive true
    log_path var/"log/mlxserve.log"
    error_log_path var/"log/mlxserve.log"
  end

  def caveats
    <<~EOS
      Models are kept in ~/.mlxserve/models. The first start prepares the default model
      (Gemma 3 270M) there, which takes a minute. Models already downloaded by mlx-lm, the
      Hugging Face CLI or LM Studio are served in place; `mlxserve get REPO` fetches more.
      Serve at login on port 1234:
        brew services start mlxserve
    EOS
  end

  test do
    assert_match version.to_s, shell_output("#{bin}/mlxserve --version")
    ENV["MLXSERVE_HOME"] = testpath/".mlxserve"
    assert_equal "[]", shell_output("#{bin}/mlxserve ls --json").strip
    port = free_port
    pid = spawn bin/"mlxserve", "server", "status", "--port", port.to_s
    Process.wait(pid)
    assert_equal 3, $CHILD_STATUS.exitstatus # nothing is running on a fresh port
  end
end
