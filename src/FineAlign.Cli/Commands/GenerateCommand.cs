using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using FineAlign.Data;
using FineAlign.Generation;
using FineAlign.Models;
using FineAlign.Text;

namespace FineAlign.Cli.Commands;

/// <summary>
/// <c>finealign generate</c>: completions for prompts given on the command line or in a JSONL file, with the
/// library's <see cref="TextGenerator"/> (batched, KV cache). Prompts are tokenized exactly as in training
/// (<see cref="SftEncoder.EncodePrompt(string)"/>), so a fine-tuned model sees the prefix it was trained on.
/// </summary>
public static class GenerateCommand
{
    public static Command Create()
    {
        var cmd = new RecipeCommand("generate",
            "Generate completions. Prompts come from --prompt (repeatable) or --input, a JSONL file whose lines are " +
            "{\"prompt\": \"...\"}, conversational {\"messages\": [{\"role\", \"content\"}, ...]} (rendered with the chat template " +
            "and its generation prompt) or {\"prompt_input_ids\": [...]}. Writes one JSON line per prompt (prompt, completion, " +
            "completion_ids, token_logprobs, finish_reason) to --output, or prints the completions readably. " +
            "Same seed, batch size and prompts => same output.");
        var model = cmd.Declare<string?>("--model", null, "Hugging Face model folder with tokenizer files, or a FineAlign checkpoint folder with a model/ subfolder. Required.", alias: "-m");
        var prompt = cmd.Declare("--prompt", Array.Empty<string>(), "A text prompt; repeat the option for several. Not together with --input.", alias: "-p");
        var input = cmd.Declare<string?>("--input", null, "JSONL file of prompts (see above). Not together with --prompt.", alias: "-i");
        var maxNew = cmd.Declare("--max-new-tokens", 64, "Maximum tokens generated per prompt.",
            check: v => v >= 1 ? null : "must be at least 1");
        var temperature = cmd.Declare("--temperature", 1.0, "Sampling temperature; 0 means greedy. Token log-probs are reported at this temperature.",
            check: v => v >= 0 && double.IsFinite(v) ? null : "must be 0 or more");
        var topK = cmd.Declare("--top-k", 0, "Sample only from the k most likely tokens; 0 disables.",
            check: v => v >= 0 ? null : "must be 0 or more");
        var topP = cmd.Declare("--top-p", 1.0, "Nucleus sampling: sample from the smallest set of tokens whose probability reaches p; 1 disables.",
            check: v => v > 0 && v <= 1 ? null : "must be in (0, 1]");
        var greedy = cmd.Declare("--greedy", false, "Always take the most likely token (ignores temperature, top-k, top-p and seed).");
        var seed = cmd.Declare("--seed", 0L, "Random seed for sampling (batch k uses seed + k).");
        var stop = cmd.Declare("--stop", Array.Empty<string>(), "Stop a completion at this string (cut before it); repeatable.");
        var batchSize = cmd.Declare("--batch-size", 8, "Prompts generated together (left-padded).",
            check: v => v >= 1 ? null : "must be at least 1");
        var chatTemplate = cmd.Declare<string?>("--chat-template", null, ChatTemplateHelp);
        var chatKwargs = cmd.Declare<string?>("--chat-template-kwargs", null, "JSON object of extra chat-template variables, e.g. '{\"enable_thinking\": false}'.");
        var output = cmd.Declare<string?>("--output", null, "Write JSON lines to this file (atomically: all or nothing) instead of printing the completions.", alias: "-o");
        var dtype = cmd.Declare("--dtype", "float32", $"Weight dtype ({ModelFolder.DTypeNames}).", check: ModelFolder.CheckDType);

        var runtime = RuntimeFlags.Declare(cmd);
        cmd.SetRecipeAction((recipe, ct) =>
        {
            runtime.Apply(recipe);
            string modelDir = recipe.Get(model) ?? throw LogprobsCommand.Required("--model", "a model folder");
            string[] prompts = recipe.Get(prompt) ?? [];
            string? inputPath = recipe.Get(input);
            if (prompts.Length > 0 && inputPath is not null) throw new UsageException("give prompts with --prompt or --input, not both");
            if (prompts.Length == 0 && inputPath is null) throw new UsageException("no prompts: give --prompt TEXT (repeatable) or --input prompts.jsonl");
            if (inputPath is not null && !File.Exists(inputPath))
                throw new FineAlignException(Directory.Exists(inputPath) ? $"{inputPath}: is a folder, expected a JSONL file" : $"{inputPath}: file not found");

            var options = new GenerationOptions
            {
                MaxNewTokens = recipe.Get(maxNew),
                DoSample = !recipe.Get(greedy),
                Temperature = recipe.Get(temperature),
                TopK = recipe.Get(topK),
                TopP = recipe.Get(topP),
                StopStrings = recipe.Get(stop) is { Length: > 0 } s ? s : null,
            };
            options.Validate();

            using var lm = ModelFolder.LoadModel(modelDir, ModelFolder.ParseDType(recipe.Get(dtype))!.Value, out string resolved);
            var tokenizer = ModelFolder.TryLoadTokenizer(resolved);
            if (options.StopStrings is not null && tokenizer is null)
                throw new FineAlignException($"{resolved}: --stop needs a tokenizer, but the model folder has no tokenizer files");
            if (recipe.Get(chatTemplate) is { } name && tokenizer is not null) ChatTemplates.Resolve(name, tokenizer, resolved);   // fail early on a typo
            var job = new Job(lm, tokenizer, resolved, recipe.Get(chatTemplate), TemplateCommand.ParseKwargs(recipe.Get(chatKwargs)), options, recipe.Get(batchSize), recipe.Get(seed));

            IEnumerable<GenerationPrompt> source = inputPath is null ? job.FromCommandLine(prompts) : job.FromFile(inputPath);
            string? outPath = recipe.Get(output);
            using var sink = outPath is null ? JsonlOutput.ToConsole(recipe.Out) : JsonlOutput.ToFile(outPath);
            if (sink.IsFile)
            {
                long total = inputPath is null ? prompts.Length : LogprobsCommand.CountLines(inputPath);
                CliProgress.Run(recipe.Out, progress => { job.Run(source, sink.Write, progress, total, ct); return 0; });
                sink.Commit();
                recipe.Out.WriteLine($"wrote {sink.Count} completions to {outPath}");
            }
            else
            {
                job.Run(source, line => PrintReadably(recipe.Out, line), null, 0, ct);
                sink.Commit();
            }
            return 0;
        });
        return cmd;
    }

    private sealed class Job(CausalLM model, TextTokenizer? tokenizer, string folder, string? chatTemplate,
                             IReadOnlyDictionary<string, object?>? chatKwargs, GenerationOptions options, int batchSize, long seed)
    {
        private readonly GenerationPromptReader _reader = new(tokenizer, folder, chatTemplate, model.Config.VocabSize,
            model.Config.MaxPositionEmbeddings, options.MaxNewTokens) { ChatTemplateKwargs = chatKwargs };

        public IEnumerable<GenerationPrompt> FromCommandLine(string[] prompts)
        {
            if (Array.FindIndex(prompts, p => p.Length == 0) is int empty and >= 0) throw new UsageException($"--prompt #{empty + 1} is empty");
            return _reader.FromTexts(prompts, i => $"--prompt #{i + 1}");
        }

        public IEnumerable<GenerationPrompt> FromFile(string file) => _reader.FromFile(file);

        public void Run(IEnumerable<GenerationPrompt> prompts, Action<JsonObject> write, IProgress<ProgressUpdate>? progress, long total, CancellationToken ct)
        {
            var baseEos = model.Config.EosTokenIds.Length > 0 ? model.Config.EosTokenIds
                : tokenizer?.EosId is int e ? [e] : [];
            var batch = new List<GenerationPrompt>(batchSize);
            long done = 0, batchIndex = 0;
            foreach (var p in prompts)
            {
                ct.ThrowIfCancellationRequested();
                batch.Add(p);
                if (batch.Count == batchSize) Flush();
            }
            if (batch.Count > 0) Flush();
            if (done == 0) throw new FineAlignException("no prompts (the input file is empty)");

            void Flush()
            {
                var eos = batch.Any(b => b.IsChat) && _reader.ChatEnd() is int end ? baseEos.Append(end).Distinct().ToArray() : baseEos;
                var o = options with { Seed = unchecked(seed + batchIndex), EosTokenIds = eos };
                var results = TextGenerator.Generate(model, batch.Select(b => b.Ids).ToList(), o, tokenizer);
                for (int i = 0; i < batch.Count; i++)
                {
                    var r = results[i];
                    var line = new JsonObject { ["index"] = done + i };
                    if (batch[i].Line is long n) line["line"] = n;
                    line["prompt"] = batch[i].Echo?.DeepClone();
                    line["prompt_input_ids"] = new JsonArray(r.PromptIds.Select(x => (JsonNode)x).ToArray());
                    line["completion"] = tokenizer is null ? null : r.Text;
                    line["completion_ids"] = new JsonArray(r.Tokens.Select(x => (JsonNode)x).ToArray());
                    line["token_logprobs"] = new JsonArray(r.LogProbs.Select(LogprobsCommand.Number).ToArray());
                    line["finish_reason"] = FinishName(r.FinishReason);
                    write(line);
                }
                done += batch.Count;
                batchIndex++;
                progress?.Report(new ProgressUpdate("generate", done, Math.Max(total, done)));
                batch.Clear();
            }
        }
    }

    /// <summary>The --chat-template help shared by the commands that render chats.</summary>
    public const string ChatTemplateHelp =
        "Chat template for message data: a preset (chatml, llama2, zephyr), a Jinja template file, or the name of one of the model's " +
        "named templates. Default: the model's own (chat_template.jinja, else tokenizer_config.json's chat_template).";

    public static string FinishName(FinishReason r) => r switch
    {
        FinishReason.Eos => "eos",
        FinishReason.StopString => "stop_string",
        _ => "length",
    };

    private static void PrintReadably(TextWriter output, JsonObject line)
    {
        long index = line["index"]!.GetValue<long>();
        string prompt = line["prompt"] switch
        {
            JsonValue v when v.GetValueKind() == JsonValueKind.String => v.GetValue<string>(),
            JsonArray msgs => string.Join("\n", msgs.Select(m => $"{m?["role"]}: {m?["content"]}")),
            _ => "[" + string.Join(", ", line["prompt_input_ids"]!.AsArray().Select(x => x!.ToJsonString())) + "]",
        };
        string completion = line["completion"]?.GetValue<string>()
                            ?? "[" + string.Join(", ", line["completion_ids"]!.AsArray().Select(x => x!.ToJsonString())) + "]";
        int tokens = line["completion_ids"]!.AsArray().Count;
        output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"### prompt {index + 1}"));
        output.WriteLine(prompt);
        output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"### completion ({tokens} tokens, finish: {line["finish_reason"]})"));
        output.WriteLine(completion);
        output.WriteLine();
        output.Flush();
    }
}
