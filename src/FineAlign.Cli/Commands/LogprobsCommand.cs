using System.CommandLine;
using System.Text.Json.Nodes;
using FineAlign.Data;
using FineAlign.Models;
using FineAlign.Objectives;
using FineAlign.Text;
using TorchSharp;
using static TorchSharp.torch;

namespace FineAlign.Cli.Commands;

/// <summary>
/// <c>finealign logprobs</c>: per-token log-probabilities of given sequences — the scriptable check that a model
/// loads right (compare with transformers on the same ids). token_logprobs[t] = log p(ids[t+1] | ids[..t]) by
/// log_softmax, exactly as <see cref="CausalLmLoss.TokenLogProbs"/>.
/// </summary>
public static class LogprobsCommand
{
    public static Command Create()
    {
        var cmd = new RecipeCommand("logprobs",
            "Score token sequences with a model: for each input line {\"input_ids\": [...]} or {\"text\": \"...\"} (text needs " +
            "tokenizer files in the model folder; BOS is added as the tokenizer does) print one JSON line " +
            "{\"line\", \"input_ids\", \"token_logprobs\", \"sum\"} where token_logprobs[t] = log p(ids[t+1] | ids[..t]). " +
            "The scriptable check that a model loads right.");
        var model = cmd.Declare<string?>("--model", null, "Hugging Face model folder (config.json + safetensors), or a FineAlign checkpoint folder with a model/ subfolder. Required.", alias: "-m");
        var input = cmd.Declare<string?>("--input", null, "JSONL file of sequences, one {\"input_ids\": [...]} or {\"text\": \"...\"} per line. Required.", alias: "-i");
        var output = cmd.Declare<string?>("--output", null, "Write the JSON lines to this file (atomically: all or nothing) instead of standard output.", alias: "-o");
        var dtype = cmd.Declare("--dtype", "float32", $"Weight dtype for the forward pass ({ModelFolder.DTypeNames}); log-probs are always computed in float32.",
            check: ModelFolder.CheckDType);
        var batchSize = cmd.Declare("--batch-size", 8, "Lines scored per forward pass (right-padded, with an attention mask).",
            check: v => v >= 1 ? null : "must be at least 1");
        var overLength = cmd.Declare("--over-length", OverLengthPolicy.Error,
            "A sequence longer than the model's context (max_position_embeddings): error (stop, naming the line) or truncate (keep the first tokens; one warning).");
        overLength.HelpName = "error|truncate";

        var runtime = RuntimeFlags.Declare(cmd);
        cmd.SetRecipeAction((recipe, ct) =>
        {
            runtime.Apply(recipe);
            string modelDir = recipe.Get(model) ?? throw Required("--model", "a model folder");
            string inputPath = recipe.Get(input) ?? throw Required("--input", "a JSONL file");
            if (!File.Exists(inputPath))
                throw new FineAlignException(Directory.Exists(inputPath) ? $"{inputPath}: is a folder, expected a JSONL file" : $"{inputPath}: file not found");
            var job = new Job(inputPath, recipe.Get(batchSize), recipe.Get(overLength));

            using var lm = ModelFolder.LoadModel(modelDir, ModelFolder.ParseDType(recipe.Get(dtype))!.Value, out string resolved);
            job.Model = lm;
            job.Tokenizer = ModelFolder.TryLoadTokenizer(resolved);
            job.TokenizerFolder = resolved;

            string? outPath = recipe.Get(output);
            using var sink = outPath is null ? JsonlOutput.ToConsole(recipe.Out) : JsonlOutput.ToFile(outPath);
            if (sink.IsFile)
            {
                long total = CountLines(inputPath);
                CliProgress.Run(recipe.Out, progress => { job.Run(sink, progress, total, ct); return 0; });
            }
            else job.Run(sink, null, 0, ct);
            sink.Commit();

            if (job.Truncated.Count > 0)
                recipe.Error.WriteLine($"warning: {job.Truncated.Count} sequence(s) longer than the model's context of {lm.Config.MaxPositionEmbeddings} tokens " +
                                       $"were truncated (line {string.Join(", ", job.Truncated.Take(5))}{(job.Truncated.Count > 5 ? ", ..." : "")})");
            if (sink.IsFile)
                recipe.Out.WriteLine($"scored {sink.Count} sequences ({job.Tokens} predicted tokens, mean log-prob {(job.Tokens > 0 ? job.SumAll / job.Tokens : 0):F4}) to {outPath}");
            return 0;
        });
        return cmd;
    }

    internal static UsageException Required(string option, string what) =>
        new($"option {option} is required ({what}); give it on the command line or as '{option.TrimStart('-').Replace('-', '_')}:' in --config");

    /// <summary>Non-blank lines of a file (for the progress total; cheap next to the forward passes).</summary>
    internal static long CountLines(string path) => File.ReadLines(path).LongCount(l => !string.IsNullOrWhiteSpace(l));

    private sealed class Job(string file, int batchSize, OverLengthPolicy overLength)
    {
        public CausalLM Model = null!;
        public TextTokenizer? Tokenizer;
        public string TokenizerFolder = "";
        public readonly List<long> Truncated = [];
        public long Tokens;
        public double SumAll;

        public void Run(JsonlOutput sink, IProgress<ProgressUpdate>? progress, long total, CancellationToken ct)
        {
            var batch = new List<(long Line, int[] Ids)>(batchSize);
            long done = 0;
            foreach (var line in JsonlReader.Read(file))
            {
                ct.ThrowIfCancellationRequested();
                batch.Add((line.LineNumber, Parse(line)));
                if (batch.Count == batchSize) Flush();
            }
            if (batch.Count > 0) Flush();
            if (done == 0) throw new FineAlignException($"{file}: no sequences (the file is empty)");

            void Flush()
            {
                var scores = SequenceLogProbs.Score(Model, batch.Select(b => b.Ids).ToList());
                for (int i = 0; i < batch.Count; i++)
                {
                    double sum = scores[i].Sum(x => (double)x);
                    Tokens += scores[i].Length;
                    SumAll += sum;
                    sink.Write(new JsonObject
                    {
                        ["line"] = batch[i].Line,
                        ["input_ids"] = new JsonArray(batch[i].Ids.Select(x => (JsonNode)x).ToArray()),
                        ["token_logprobs"] = new JsonArray(scores[i].Select(Number).ToArray()),
                        ["sum"] = Number(sum),
                    });
                }
                done += batch.Count;
                progress?.Report(new ProgressUpdate("logprobs", done, Math.Max(total, done)));
                batch.Clear();
            }
        }

        private int[] Parse(JsonlLine line)
        {
            var o = line.Object;
            int[] ids;
            if (o.ContainsKey("input_ids"))
            {
                if (o.ContainsKey("text"))
                    throw new DataFormatException(file, line.LineNumber, null, "has both 'input_ids' and 'text'; give one");
                ids = line.RequireIntArray(file, "input_ids");
            }
            else if (o.ContainsKey("text"))
            {
                string text = line.RequireString(file, "text");
                var tok = Tokenizer ?? throw new DataFormatException(file, line.LineNumber, "text",
                    $"text needs a tokenizer, but the model folder '{TokenizerFolder}' has no tokenizer files; give 'input_ids' instead");
                ids = tok.AddBos && tok.BosId is int bos ? [bos, .. tok.Encode(text)] : tok.Encode(text);
            }
            else throw new DataFormatException(file, line.LineNumber, null, "expected 'input_ids' (an array of token ids) or 'text' (a string)");

            string field = o.ContainsKey("input_ids") ? "input_ids" : "text";
            if (ids.Length == 0) throw new DataFormatException(file, line.LineNumber, field, "no tokens; a sequence needs at least one");
            int vocab = Model.Config.VocabSize;
            for (int t = 0; t < ids.Length; t++)
                if (ids[t] < 0 || ids[t] >= vocab)
                    throw new DataFormatException(file, line.LineNumber, field, $"token id {ids[t]} at position {t} is outside the model's vocabulary [0, {vocab})");
            int context = Model.Config.MaxPositionEmbeddings;
            if (ids.Length > context)
            {
                if (overLength == OverLengthPolicy.Error)
                    throw new DataFormatException(file, line.LineNumber, field,
                        $"{ids.Length} tokens exceed the model's context of {context} (use --over-length truncate to keep the first {context})");
                Truncated.Add(line.LineNumber);
                ids = ids[..context];
            }
            return ids;
        }
    }

    internal static JsonNode? Number(float x) => float.IsFinite(x) ? JsonValue.Create(x) : null;

    internal static JsonNode? Number(double x) => double.IsFinite(x) ? JsonValue.Create(x) : null;
}
