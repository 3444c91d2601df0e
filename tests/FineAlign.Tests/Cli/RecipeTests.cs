using System.CommandLine;
using FineAlign.Cli;
using FineAlign.Tests.Support;

namespace FineAlign.Tests.Cli;

public class RecipeTests
{
    private enum Schedule { Constant, LinearWarmup }

    /// <summary>A sample training-like command declared the way real commands are.</summary>
    private sealed class Probe
    {
        public readonly RootCommand Root = new("test");
        public readonly RecipeCommand Command = new("train", "Train something.");
        public readonly Option<double> LearningRate;
        public readonly Option<int> Steps;
        public readonly Option<bool> Shuffle;
        public readonly Option<string?> Model;
        public readonly Option<Schedule> Schedule;
        public readonly Option<int[]> Layers;
        public Recipe? Seen;

        public Probe()
        {
            LearningRate = Command.Declare("--learning-rate", 1e-4, "Peak learning rate.", check: v => v > 0 ? null : "must be positive");
            Steps = Command.Declare("--steps", 100, "Optimizer steps.");
            Shuffle = Command.Declare("--shuffle", true, "Shuffle the data each epoch.");
            Model = Command.Declare<string?>("--model", null, "Model folder.");
            Schedule = Command.Declare("--schedule", RecipeTests.Schedule.Constant, "Learning-rate schedule.");
            Layers = Command.Declare("--layers", new[] { 1 }, "Layers to train.");
            Command.SetRecipeAction((recipe, _) => { Seen = recipe; return 0; });
            Root.Add(Command);
        }

        public void Ok(params string[] args)
        {
            var (code, err) = Invoke(args);
            Assert.True(code == 0, err);
        }

        public (int Code, string Err) Invoke(params string[] args)
        {
            var err = new StringWriter();
            try
            {
                return (Root.Parse(args).Invoke(new InvocationConfiguration { Output = new StringWriter(), Error = err, EnableDefaultExceptionHandler = false }), err.ToString());
            }
            catch (Exception ex)
            {
                return (CliApp.ReportException(ex, err, verbose: false), err.ToString());
            }
        }
    }

    private static string Yaml(TempDir dir, string text)
    {
        string p = Path.Combine(dir.Path, "recipe.yaml");
        File.WriteAllText(p, text);
        return p;
    }

    [Fact]
    public void Defaults_then_yaml_then_flags()
    {
        using var tmp = TestPaths.NewTempDir();
        var p = new Probe();
        p.Ok("train");
        Assert.Equal(1e-4, p.Seen!.Get(p.LearningRate));
        Assert.Equal(ValueSource.Default, p.Seen.SourceOf(p.LearningRate));
        Assert.Null(p.Seen.Get(p.Model));

        // snake_case and kebab-case keys both work; YAML beats defaults.
        string yaml = Yaml(tmp, "learning_rate: 3e-5\nsteps: 20\nshuffle: false\nmodel: runs/tiny\nschedule: linear_warmup\nlayers: [2, 3]\n");
        p.Ok("train", "--config", yaml);
        Assert.Equal(3e-5, p.Seen!.Get(p.LearningRate));
        Assert.Equal(20, p.Seen.Get(p.Steps));
        Assert.False(p.Seen.Get(p.Shuffle));
        Assert.Equal("runs/tiny", p.Seen.Get(p.Model));
        Assert.Equal(Schedule.LinearWarmup, p.Seen.Get(p.Schedule));
        Assert.Equal([2, 3], p.Seen.Get(p.Layers));
        Assert.Equal(ValueSource.Config, p.Seen.SourceOf(p.Steps));

        // Flags beat YAML, also when the flag equals the default value.
        p.Ok("train", "-c", yaml, "--steps", "100", "--shuffle", "--learning-rate", "0.5");
        Assert.Equal(100, p.Seen!.Get(p.Steps));
        Assert.True(p.Seen.Get(p.Shuffle));
        Assert.Equal(0.5, p.Seen.Get(p.LearningRate));
        Assert.Equal(ValueSource.CommandLine, p.Seen.SourceOf(p.Steps));
        Assert.Equal("runs/tiny", p.Seen.Get(p.Model));              // untouched keys still from YAML

        yaml = Yaml(tmp, "learning-rate: 0.25\n--steps: 7\n");
        p.Ok("train", "--config", yaml);
        Assert.Equal(0.25, p.Seen!.Get(p.LearningRate));
        Assert.Equal(7, p.Seen.Get(p.Steps));
        Assert.Equal(0.25, p.Seen.Values["learning-rate"]);
    }

    [Fact]
    public void Unknown_key_names_file_line_key_and_suggestion()
    {
        using var tmp = TestPaths.NewTempDir();
        var p = new Probe();
        string yaml = Yaml(tmp, "steps: 5\nlearning_rat: 1e-3\n");
        var (code, err) = p.Invoke("train", "--config", yaml);
        Assert.Equal(1, code);
        Assert.Equal($"error: {yaml}:2: unknown key 'learning_rat' for 'finealign train' (did you mean 'learning_rate'?)", err.Trim());

        yaml = Yaml(tmp, "batch: 5\n");
        (code, err) = p.Invoke("train", "--config", yaml);
        Assert.Equal(1, code);
        Assert.Contains("unknown key 'batch'", err);
        Assert.Contains("valid keys: learning_rate, steps, shuffle, model, schedule, layers", err);
    }

    [Theory]
    [InlineData("steps: many\n", "field 'steps': expected an integer, got 'many'")]
    [InlineData("learning_rate: fast\n", "field 'learning_rate': expected a number, got 'fast'")]
    [InlineData("shuffle: maybe\n", "field 'shuffle': expected a boolean (true/false), got 'maybe'")]
    [InlineData("schedule: cosine\n", "field 'schedule': expected one of constant, linear-warmup, got 'cosine'")]
    [InlineData("steps: [1, 2]\n", "field 'steps': expected an integer, got a list")]
    [InlineData("steps:\n", "field 'steps': expected an integer, got null")]
    [InlineData("steps: 1\nsteps: 2\n", "invalid YAML")]
    [InlineData("steps: 1\nSteps: 2\n", "field 'Steps': set twice (also on line 1)")]
    [InlineData("- steps\n", "a recipe must be a mapping")]
    [InlineData("steps: [1\n", "invalid YAML")]
    [InlineData("config: other.yaml\n", "'config' cannot be set inside a recipe")]
    public void Bad_yaml_values_give_one_line_errors(string text, string expected)
    {
        using var tmp = TestPaths.NewTempDir();
        var p = new Probe();
        var (code, err) = p.Invoke("train", "--config", Yaml(tmp, text));
        Assert.Equal(1, code);
        Assert.Single(CliRunner.Lines(err.Replace("\r", "")));
        Assert.StartsWith("error: " + Path.Combine(tmp.Path, "recipe.yaml") + ":", err);
        Assert.Contains(expected, err);
    }

    [Fact]
    public void Empty_recipe_is_all_defaults_and_checks_name_the_source()
    {
        using var tmp = TestPaths.NewTempDir();
        var p = new Probe();
        p.Ok("train", "--config", Yaml(tmp, "# nothing yet\n"));
        Assert.Equal(100, p.Seen!.Get(p.Steps));

        var (code, err) = p.Invoke("train", "--learning-rate", "-1");
        Assert.Equal(2, code);   // bad flag value = usage error
        Assert.Equal("error: option --learning-rate: must be positive, got -1", err.Trim());

        string yaml = Yaml(tmp, "learning_rate: 0\n");
        (code, err) = p.Invoke("train", "--config", yaml);
        Assert.Equal(1, code);
        Assert.Equal($"error: option --learning-rate: must be positive, got 0 (from {yaml})", err.Trim());
    }

    [Fact]
    public void Suggest_finds_close_names_only()
    {
        Assert.Equal("learning-rate", Recipe.Suggest("learning-rat", ["steps", "learning-rate"]));
        Assert.Equal("corpus", Recipe.Suggest("corpsu", ["corpus", "version"]));
        Assert.Null(Recipe.Suggest("banana", ["corpus", "version"]));
        Assert.Equal("learning-rate", Recipe.NormalizeKey("--Learning_Rate"));
    }
}
