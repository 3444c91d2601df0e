using System.Globalization;
using System.Text.Json;

namespace FineAlign.Training;

/// <summary>
/// Writes one JSON object per logging step to metrics.jsonl (keys as in TRL: "step", "epoch",
/// "loss", "learning_rate", "grad_norm", "eval/loss", ...) and the same scalars to TensorBoard
/// event files under runs/ (train keys as "train/loss", keys with a slash unchanged; <see cref="TensorBoardWriter"/>,
/// wall time in Unix seconds).
/// </summary>
public sealed class MetricsLogger : IDisposable
{
    public const string JsonlFile = "metrics.jsonl";
    public const string TensorBoardFolder = "runs";

    private readonly TensorBoardWriter? _tb;

    /// <param name="outputDir">Run folder.</param>
    /// <param name="resumeStep">0 starts a new log; otherwise lines with step &gt; resumeStep (written
    /// after that checkpoint by a run that died) are dropped so resumed steps are not duplicated.
    /// TensorBoard gets a new event file; it discards the orphaned later steps itself when the step
    /// goes backwards (purge_orphaned_data).</param>
    public MetricsLogger(string outputDir, long resumeStep = 0, bool tensorBoard = true)
    {
        Directory.CreateDirectory(outputDir);
        JsonlPath = Path.Combine(outputDir, JsonlFile);
        var kept = resumeStep > 0 && File.Exists(JsonlPath)
            ? File.ReadAllLines(JsonlPath).Where(l => l.Length > 0 && StepOf(l) <= resumeStep).ToArray()
            : Array.Empty<string>();
        // Temp file + rename: a run killed while rewriting must not lose the lines already logged.
        string tmp = JsonlPath + ".tmp";
        File.WriteAllLines(tmp, kept);
        File.Move(tmp, JsonlPath, overwrite: true);
        TensorBoardDir = Path.Combine(outputDir, TensorBoardFolder);
        if (tensorBoard) _tb = new TensorBoardWriter(TensorBoardDir);
    }

    public string JsonlPath { get; }

    /// <summary>Closes the TensorBoard event file (every event is already flushed).</summary>
    public void Dispose() => _tb?.Dispose();
    public string TensorBoardDir { get; }

    /// <summary>Appends one entry; it must contain "step".</summary>
    public void Log(IReadOnlyDictionary<string, double> entry)
    {
        if (!entry.TryGetValue("step", out double step)) throw new ArgumentException("a metrics entry needs a \"step\"", nameof(entry));
        File.AppendAllText(JsonlPath, ToJson(entry) + "\n");
        if (_tb is null) return;
        foreach (var (key, value) in entry)
        {
            if (key == "step" || !double.IsFinite(value)) continue;
            _tb.AddScalar(key.Contains('/') ? key : "train/" + key, (float)value, (long)step);
        }
    }

    /// <summary>Reads a metrics.jsonl file back.</summary>
    public static List<Dictionary<string, double>> Read(string path)
        => File.ReadAllLines(path).Where(l => l.Length > 0)
            .Select(l => JsonSerializer.Deserialize<Dictionary<string, double>>(l, TrainerState.Json)!)
            .ToList();

    internal static string ToJson(IReadOnlyDictionary<string, double> entry)
        => JsonSerializer.Serialize(entry, new JsonSerializerOptions { NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals });

    // A run killed mid-append leaves a torn last line: it counts as after the checkpoint (dropped), not as a crash.
    private static double StepOf(string line)
    {
        try
        {
            using var doc = JsonDocument.Parse(line);
            return doc.RootElement.ValueKind == JsonValueKind.Object && doc.RootElement.TryGetProperty("step", out var s)
                   && s.ValueKind == JsonValueKind.Number ? s.GetDouble() : double.MaxValue;
        }
        catch (JsonException) { return double.MaxValue; }
    }
}
