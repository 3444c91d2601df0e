using System.CommandLine;
using FineAlign.Serving;

namespace FineAlign.Cli.Commands;

/// <summary>
/// <c>finealign serve</c>: parses the options and runs <see cref="OpenAiServer"/> (src/FineAlign.Serving) until
/// SIGTERM or Ctrl+C (the CLI's cancellation token), which finish in-flight requests before the process exits 0.
/// </summary>
public static class ServeCommand
{
    public const string Name = "serve";

    public static Command Create()
    {
        var cmd = new RecipeCommand(Name,
            "Serve a model over an OpenAI-compatible HTTP API: GET /v1/models, POST /v1/completions, POST /v1/chat/completions " +
            "(stream: true as server-sent events), GET /health, GET /metrics, and POST /v1/reload_weights (reload the model " +
            "folder from disk). Requests arriving together are decoded in one batch. Binds to 127.0.0.1 unless --host says " +
            "otherwise. See docs/SERVE.md.");
        var model = cmd.Declare<string?>("--model", null, "Hugging Face model folder (config.json + safetensors; tokenizer files for text prompts and chat), or a FineAlign run folder with a model/ subfolder. Required.", alias: "-m");
        var host = cmd.Declare("--host", "127.0.0.1", "Address to listen on: 127.0.0.1 (this machine only), 0.0.0.0 (every interface), ::1.");
        var port = cmd.Declare("--port", 8000, "TCP port (0 picks a free one and prints it).", check: v => v is >= 0 and <= 65535 ? null : "must be in [0, 65535]");
        var apiKey = cmd.Declare<string?>("--api-key", null, "Require 'Authorization: Bearer KEY' on every /v1 request (401 otherwise). Default: the FINEALIGN_API_KEY environment variable, else no key.");
        var name = cmd.Declare<string?>("--served-model-name", null, "Model id that clients send and /v1/models lists (default: the model folder's name).");
        var maxBatch = cmd.Declare("--max-batch", 32, "Most sequences (prompts × n) decoded together in one generation call.", check: v => v >= 1 ? null : "must be at least 1");
        var maxConcurrency = cmd.Declare("--max-concurrency", 64, "Most generation requests served at once; more are answered 429 (clients retry).", check: v => v >= 1 ? null : "must be at least 1");
        var window = cmd.Declare("--batch-wait-ms", 5.0, "How long an idle server waits for more requests to batch with the first (milliseconds).",
            check: v => v >= 0 && double.IsFinite(v) ? null : "must be 0 or more");
        var chatTemplate = cmd.Declare<string?>("--chat-template", null, "Chat template for /v1/chat/completions: a preset (chatml, llama2, zephyr), a .jinja file or one of the model's named templates; default: the model's own chat_template.");
        var dtype = cmd.Declare("--dtype", "float32", $"Weight dtype ({ModelFolder.DTypeNames}).", check: ModelFolder.CheckDType);
        var threads = cmd.Declare("--threads", 0, "Torch CPU threads (0 = torch's default).", check: v => v >= 0 ? null : "must be 0 or more");

        cmd.SetRecipeAction(async (recipe, ct) =>
        {
            string modelDir = recipe.Get(model) ?? throw LogprobsCommand.Required("--model", "a model folder");
            string resolved = ModelFolder.Resolve(modelDir);
            if (recipe.Get(threads) is > 0 and var n) TorchSharp.torch.set_num_threads(n);
            var options = new ServeOptions
            {
                ModelPath = resolved,
                ServedModelName = recipe.Get(name) ?? Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(modelDir))),
                Host = recipe.Get(host),
                Port = recipe.Get(port),
                ApiKey = recipe.Get(apiKey) ?? (Environment.GetEnvironmentVariable("FINEALIGN_API_KEY") is { Length: > 0 } k ? k : null),
                MaxBatch = recipe.Get(maxBatch),
                MaxConcurrency = recipe.Get(maxConcurrency),
                BatchWindow = TimeSpan.FromMilliseconds(recipe.Get(window)),
                ChatTemplate = recipe.Get(chatTemplate),
                DType = ModelFolder.ParseDType(recipe.Get(dtype))!.Value,
                HandleSignals = false,   // CliApp.RunProcessAsync turns SIGTERM/Ctrl+C into ct, which drains the server
            };
            await OpenAiServer.RunAsync(options, recipe.Out, ct);
            return 0;
        });
        return cmd;
    }
}
