package admin

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"

	adminv1 "campfire.dev/clients/go/gen/campfire/admin/v1"
	"google.golang.org/protobuf/types/known/structpb"
)

// The files of a job folder that are not sent as app files.
const (
	metaFile     = "meta.json"
	serverConfig = "config/config_fed_server.json"
	clientConfig = "config/config_fed_client.json"
)

// InvalidJobFolderError says what is wrong with a job folder, naming the file.
type InvalidJobFolderError struct{ Problem string }

func (e *InvalidJobFolderError) Error() string { return e.Problem }

type jobMeta struct {
	Name             *string                       `json:"name"`
	DeployMap        map[string][]string           `json:"deploy_map"`
	ResourceSpec     map[string]map[string]float64 `json:"resource_spec"`
	MinClients       *uint32                       `json:"min_clients"`
	MandatoryClients []string                      `json:"mandatory_clients"`
}

// ReadJobFolder reads an NVFLARE-style job folder into a JobDefinition:
//
//	<folder>/meta.json                            name, deploy_map, resource_spec, min_clients, mandatory_clients
//	<folder>/<app>/config/config_fed_server.json  {"workflow": "<name>", "args": {...}}
//	<folder>/<app>/config/config_fed_client.json  passed to the clients that run the app
//	<folder>/<app>/**                             other files of the app (an initial model, ...)
//
// Only the apps named in deploy_map are read; the site checks the rest.
func ReadJobFolder(folder string) (*adminv1.JobDefinition, error) {
	root, err := filepath.Abs(folder)
	if err != nil {
		return nil, err
	}
	text, err := os.ReadFile(filepath.Join(root, metaFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, &InvalidJobFolderError{fmt.Sprintf("%s has no %s: a job folder needs one with at least \"deploy_map\"", folder, metaFile)}
	} else if err != nil {
		return nil, err
	}
	var meta jobMeta
	if err := json.Unmarshal(text, &meta); err != nil {
		return nil, &InvalidJobFolderError{fmt.Sprintf("%s: %v", filepath.Join(folder, metaFile), err)}
	}
	if meta.DeployMap == nil {
		return nil, &InvalidJobFolderError{fmt.Sprintf("%s: deploy_map is required", filepath.Join(folder, metaFile))}
	}
	definition := &adminv1.JobDefinition{
		Name:             filepath.Base(root),
		JobFolderName:    filepath.Base(root),
		MandatoryClients: meta.MandatoryClients,
		ResourceSpec:     map[string]*adminv1.ResourceRequirement{},
	}
	if meta.Name != nil {
		definition.Name = *meta.Name
	}
	if meta.MinClients != nil {
		definition.MinClients = *meta.MinClients
	}
	for client, resources := range meta.ResourceSpec {
		definition.ResourceSpec[client] = &adminv1.ResourceRequirement{Resources: resources}
	}
	appNames := make([]string, 0, len(meta.DeployMap))
	for name := range meta.DeployMap {
		appNames = append(appNames, name)
	}
	sort.Strings(appNames)
	for _, name := range appNames {
		definition.DeployMap = append(definition.DeployMap, &adminv1.AppDeployment{AppName: name, Sites: meta.DeployMap[name]})
		app, err := readApp(root, name, folder)
		if err != nil {
			return nil, err
		}
		definition.Apps = append(definition.Apps, app)
	}
	return definition, nil
}

func readApp(root, name, folder string) (*adminv1.App, error) {
	appDir := filepath.Join(root, name)
	if _, err := os.Stat(appDir); errors.Is(err, fs.ErrNotExist) {
		return nil, &InvalidJobFolderError{fmt.Sprintf("deploy_map in %s names app %q, but %s/ does not exist", filepath.Join(folder, metaFile), name, filepath.Join(folder, name))}
	}
	app := &adminv1.App{Name: name}
	err := filepath.WalkDir(appDir, func(path string, entry fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		relative, _ := filepath.Rel(appDir, path)
		relative = filepath.ToSlash(relative)
		switch {
		case entry.Type()&fs.ModeSymlink != 0:
			return &InvalidJobFolderError{fmt.Sprintf("%s is a symbolic link; copy the file into the job folder instead", filepath.Join(folder, name, relative))}
		case !entry.Type().IsRegular():
			return nil
		case relative == serverConfig:
			app.ServerConfig, err = readConfig(path, name+"/"+relative)
		case relative == clientConfig:
			app.ClientConfig, err = readConfig(path, name+"/"+relative)
		default:
			var content []byte
			content, err = os.ReadFile(path)
			app.Files = append(app.Files, &adminv1.AppFile{Path: relative, Content: content})
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if app.ServerConfig == nil && app.ClientConfig == nil {
		return nil, &InvalidJobFolderError{fmt.Sprintf("app %q in %s has neither %s nor %s; add the one(s) its sites need", name, folder, serverConfig, clientConfig)}
	}
	return app, nil
}

func readConfig(path, shown string) (*structpb.Struct, error) {
	text, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var value map[string]any
	if err := json.Unmarshal(text, &value); err != nil || value == nil {
		return nil, &InvalidJobFolderError{fmt.Sprintf("%s: must hold a JSON object", shown)}
	}
	config, err := structpb.NewStruct(value)
	if err != nil {
		return nil, &InvalidJobFolderError{fmt.Sprintf("%s: %v", shown, err)}
	}
	return config, nil
}
